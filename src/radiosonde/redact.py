"""Sensitive-data filtering: redacted copies of metadata, log fields and strings.

>>> from radiosonde.redact import redact
>>> redact({"user_id": 7, "password": "hunter2", "headers": {"X-Api-Key": "k-123"}})
{'user_id': 7, 'password': '[REDACTED]', 'headers': {'X-Api-Key': '[REDACTED]'}}
>>> redact("retry with Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl")
'retry with Bearer [REDACTED]'

Two rules, both applied at every level of nested dicts, lists, tuples and sets:

* **Keys.** A value is replaced by :data:`REDACTED` when its key names a secret. Keys are
  compared case-insensitively with separators removed, so ``"X-Api-Key"``, ``"api_key"`` and
  ``"apiKey"`` are the same key. A *key term* matches anywhere in the key (``"token"`` catches
  ``"access_token"`` and ``"refreshToken"``); a *word term* must be a whole word of the key
  (``"iv"`` catches ``"encryption_iv"`` and ``"iv"`` but not ``"active"``). The defaults are
  :data:`DEFAULT_KEYS` and :data:`DEFAULT_WORDS`; keys that count tokens (``"prompt_tokens"``,
  ``"token_count"``) are not secrets and are left alone.
* **Values.** In every string, whatever the key: bearer tokens (``Bearer <token>`` becomes
  ``Bearer [REDACTED]``), JSON Web Tokens, PEM private-key blocks, and payment card numbers
  (13 to 19 digits, optionally grouped with spaces or dashes, starting with 2 to 6 as every
  card network's numbers do, and passing the Luhn check), plus any pattern you add.

Containers nested deeper than ``max_depth`` levels are replaced by :data:`TRUNCATED` (this also
ends reference cycles). Objects other than built-in containers and strings pass through as they
are: a reporter that renders them to text redacts the text.

The input is never modified: dicts, lists, tuples and sets are copied (dict subclasses and other
mappings come back as plain dicts, tuple subclasses as tuples).

Performance: the verdict on each key is cached (bounded), numbers, booleans and ``None`` are
copied without a look, and the patterns run only on strings long enough to hold a secret (the
verdict on short clean strings is cached too). A flat metadata dict of five short fields takes
about a microsecond (see ``bench/redact_budgets.py``).

Extending: ``add_keys("ssn")``, ``add_keys("dob", word=True)`` and ``add_patterns(r"sk_live_\\w+")``
change the module-level default instance used by :func:`redact` (and so by radiosonde's own
sinks); build a :class:`Redactor` for a separate policy.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_KEYS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_WORDS",
    "REDACTED",
    "TRUNCATED",
    "Redactor",
    "add_keys",
    "add_patterns",
    "default_redactor",
    "is_sensitive_key",
    "luhn_valid",
    "redact",
]

REDACTED: Final = "[REDACTED]"
"""What a secret is replaced with."""

TRUNCATED: Final = "[TRUNCATED]"
"""What a container nested deeper than ``max_depth`` is replaced with."""

DEFAULT_MAX_DEPTH: Final = 8
"""How many levels of nested containers are kept by default."""

DEFAULT_KEYS: Final[frozenset[str]] = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "authorization",
        "cookie",
        "privatekey",
        "accesskey",
        "signingkey",
        "masterkey",
        "sessionkey",
        "sessionid",
        "encryption",
        "decryptionkey",
        "credential",
        "cardnumber",
        "creditcard",
        "debitcard",
        "cardnum",
        "ccnumber",
        "cvv",
        "securitycode",
        "jwt",
        "bearer",
    }
)
"""Key terms matched anywhere in a normalised key (lower case, separators removed)."""

DEFAULT_WORDS: Final[frozenset[str]] = frozenset(
    {"auth", "session", "iv", "nonce", "salt", "pwd", "pin", "pan", "cvc", "csc", "ssn", "otp"}
)
"""Word terms: matched only as whole words of a key (``"encryption_iv"`` but not ``"active"``)."""

# "token" in a key that counts tokens (LLM usage, rate limits) does not name a secret.
_TOKEN_TERM = "token(?!s|count|type|usage|limit|budget)"
# Splits "X-Api-Key", "accessToken", "HTTPCookie", "client.secret" into their words.
_WORD_SPLIT = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

# Built-in value patterns. A group named "secret" says which part to replace (the scheme of a
# bearer token stays readable). Tokens are replaced before card numbers, so that digits inside
# a token cannot break it up before it is recognised.
_TOKENS: Final = re.compile(
    r"(?P<bearer>(?i:bearer)[ \t]+)(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)"
    r"|eyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*){2,4}"
    r"|-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    r".*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
_CARD: Final = re.compile(r"(?<![0-9])[2-6](?:[ -]?[0-9]){12,18}(?![0-9])")
_DIGITS: Final = b"0123456789"
# The shortest string a built-in pattern finds a secret in: a 13-digit card number.
_BUILTIN_MIN_LENGTH = 13

_SCALARS: Final = frozenset({int, float, bool, type(None), complex})
_COLLECTIONS: Final[tuple[type[Any], ...]] = (list, tuple, set, frozenset)
_KEY_CACHE_LIMIT = 4096
_CLEAN_CACHE_LIMIT = 4096
_CLEAN_CACHE_MAX_LENGTH = 128


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` (digits only) passes the Luhn checksum used by card numbers."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _normalise(term: str) -> str:
    return "".join(char for char in term.lower() if char.isalnum())


class Redactor:
    """One redaction policy: key terms, word terms and value patterns; see the module docstring.

    ``keys`` and ``words`` replace the defaults (pass ``DEFAULT_KEYS | {"dob"}`` to extend them);
    ``patterns`` are regular expressions (strings or compiled) added to the built-in value
    patterns, which ``builtin_patterns=False`` turns off. A pattern with a group named
    ``secret`` has only that group replaced, otherwise the whole match is.

    A redactor is safe to share between threads; :meth:`add_keys` and :meth:`add_patterns` take
    effect for calls that start after they return.
    """

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_KEYS,
        *,
        words: Iterable[str] = DEFAULT_WORDS,
        patterns: Iterable[str | re.Pattern[str]] = (),
        builtin_patterns: bool = True,
        marker: str = REDACTED,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        if isinstance(keys, str) or isinstance(words, str) or isinstance(patterns, str):
            raise TypeError("keys, words and patterns take lists of strings, not one string")
        _check_depth(max_depth)
        self.marker = marker
        self.max_depth = max_depth
        self._lock = threading.Lock()
        self._keys: frozenset[str] = frozenset()
        self._words: frozenset[str] = frozenset()
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._builtin = bool(builtin_patterns)
        self._key_regex: re.Pattern[str] | None = None
        # key -> is it sensitive; strings known to hold no secret. Both emptied when full.
        self._key_cache: dict[Any, bool] = {}
        self._clean_keys: set[Any] = set()
        self._clean: set[str] = set()
        self._min_length = 0
        self.generation = 0
        self._rebuild(keys=keys, words=words, patterns=patterns)

    # -- configuration ---------------------------------------------------------------------

    @property
    def keys(self) -> frozenset[str]:
        """The normalised key terms (matched anywhere in a key)."""
        return self._keys

    @property
    def words(self) -> frozenset[str]:
        """The normalised word terms (matched as whole words of a key)."""
        return self._words

    @property
    def patterns(self) -> tuple[re.Pattern[str], ...]:
        """The value patterns added to the built-in ones."""
        return self._patterns

    def add_keys(self, *keys: str, word: bool = False) -> None:
        """Add key terms (or, with ``word=True``, word terms) to this policy."""
        with self._lock:
            if word:
                self._rebuild(words=self._words | set(keys))
            else:
                self._rebuild(keys=self._keys | set(keys))

    def add_patterns(self, *patterns: str | re.Pattern[str]) -> None:
        """Add value patterns (regular expressions) to this policy."""
        with self._lock:
            self._rebuild(patterns=(*self._patterns, *patterns))

    def derive(self, *, extra_keys: Iterable[str] = ()) -> Redactor:
        """A new redactor with this one's policy plus ``extra_keys`` (key terms)."""
        return Redactor(
            self._keys | {_normalise(k) for k in extra_keys},
            words=self._words,
            patterns=self._patterns,
            builtin_patterns=self._builtin,
            marker=self.marker,
            max_depth=self.max_depth,
        )

    def _rebuild(
        self,
        *,
        keys: Iterable[str] | None = None,
        words: Iterable[str] | None = None,
        patterns: Iterable[str | re.Pattern[str]] | None = None,
    ) -> None:
        if keys is not None:
            normal = frozenset(_normalise(k) for k in keys)
            if "" in normal:
                raise ValueError("a key term must hold at least one letter or digit")
            alternatives = sorted(normal, key=len, reverse=True)
            regex = "|".join(_TOKEN_TERM if k == "token" else re.escape(k) for k in alternatives)
            self._key_regex = re.compile(regex) if regex else None
            self._keys = normal
        if words is not None:
            normal = frozenset(_normalise(w) for w in words)
            if "" in normal:
                raise ValueError("a word term must hold at least one letter or digit")
            self._words = normal
        if patterns is not None:
            compiled = []
            for pattern in patterns:
                if isinstance(pattern, re.Pattern):
                    compiled.append(pattern)
                elif isinstance(pattern, str):
                    try:
                        compiled.append(re.compile(pattern))
                    except re.error as exc:
                        raise ValueError(f"invalid redaction pattern {pattern!r}: {exc}") from None
                else:
                    raise TypeError(f"a redaction pattern must be a str or re.Pattern: {pattern!r}")
            self._patterns = tuple(compiled)
        self._min_length = 0 if self._patterns or not self._builtin else _BUILTIN_MIN_LENGTH
        if not self._patterns and not self._builtin:
            self._min_length = 1 << 62  # nothing to look for in strings
        # New caches rather than .clear(): a call running concurrently keeps a consistent view.
        self._key_cache = {}
        self._clean_keys = set()
        self._clean = set()
        self.generation += 1

    # -- verdicts --------------------------------------------------------------------------

    def is_sensitive_key(self, key: object) -> bool:
        """True when values under ``key`` are redacted. Only string keys can be sensitive."""
        try:
            return self._key_cache[key]
        except KeyError:
            return self._classify(key)
        except TypeError:  # unhashable: cannot be a dict key anyway
            return False

    def _classify(self, key: object) -> bool:
        if not isinstance(key, str):
            verdict = False
        else:
            words = [w.lower() for w in _WORD_SPLIT.findall(key)]
            joined = "".join(words)
            regex = self._key_regex
            verdict = (regex is not None and regex.search(joined) is not None) or any(
                w in self._words for w in words
            )
        cache = self._key_cache
        clean_keys = self._clean_keys
        if len(cache) >= _KEY_CACHE_LIMIT:
            cache.clear()
            clean_keys.clear()
        cache[key] = verdict
        if not verdict:
            clean_keys.add(key)
        return verdict

    def redact_string(self, text: str) -> str:
        """``text`` with every pattern match replaced by the marker (``text`` itself if none)."""
        if len(text) < self._min_length or text in self._clean:
            return text
        return self._scan(text)

    def _scan(self, text: str) -> str:
        result = text
        if self._builtin and len(text) >= _BUILTIN_MIN_LENGTH:
            # Cheap necessary conditions first (a scan by the patterns costs microseconds): a
            # token has a literal marker, a card number needs 13 digits.
            if "eyJ" in text or "-----BEGIN" in text or "bearer" in text.lower():
                result = _TOKENS.sub(self._replace_token, result)
            raw = result.encode("utf-8", "ignore")
            if len(raw) - len(raw.translate(None, _DIGITS)) >= _BUILTIN_MIN_LENGTH:
                result = _CARD.sub(self._replace_card, result)
        for pattern in self._patterns:
            result = pattern.sub(self._replace_user, result)
        if result is text or result == text:
            if len(text) <= _CLEAN_CACHE_MAX_LENGTH:
                clean = self._clean
                if len(clean) >= _CLEAN_CACHE_LIMIT:
                    clean.clear()
                clean.add(text)
            return text
        return result

    def _replace_token(self, match: re.Match[str]) -> str:
        if match.group("bearer") is not None:
            return match.group("bearer") + self.marker
        return self.marker

    def _replace_card(self, match: re.Match[str]) -> str:
        card = match.group(0)
        digits = card.replace(" ", "").replace("-", "")
        return self.marker if luhn_valid(digits) else card

    def _replace_user(self, match: re.Match[str]) -> str:
        if "secret" in match.re.groupindex and match.group("secret") is not None:
            start, end = match.span("secret")
            whole_start = match.start()
            text = match.group(0)
            return text[: start - whole_start] + self.marker + text[end - whole_start :]
        return self.marker

    # -- redaction -------------------------------------------------------------------------

    def redact(self, value: Any, *, max_depth: int | None = None) -> Any:
        """A redacted copy of ``value``; see the module docstring. Never modifies ``value``."""
        if max_depth is None:
            max_depth = self.max_depth
        else:
            _check_depth(max_depth)
        return self._value(value, 0, max_depth)

    __call__ = redact

    def _value(self, value: Any, depth: int, max_depth: int) -> Any:
        kind: type[Any] | None = type(value)
        if kind in _SCALARS:
            return value
        if kind is str or isinstance(value, str):
            return self.redact_string(value)
        if kind is dict or isinstance(value, Mapping):
            return self._dict(value, depth, max_depth)
        if kind not in _COLLECTIONS:
            kind = next((base for base in _COLLECTIONS if isinstance(value, base)), None)
            if kind is None:
                return value
        return self._collection(value, kind, depth, max_depth)

    def _collection(self, value: Iterable[Any], kind: type[Any], depth: int, max_depth: int) -> Any:
        if depth >= max_depth:
            return TRUNCATED
        items = [self._value(item, depth + 1, max_depth) for item in value]
        return items if kind is list else kind(items)

    def _dict(self, value: Mapping[Any, Any], depth: int, max_depth: int) -> Any:
        if depth >= max_depth:
            return TRUNCATED
        # The hot path: every key known to be harmless (one C-level set check) and every value a
        # number or a short or known-clean string: a plain copy. With harmless keys but other
        # values, a copy in which only those values are replaced.
        clean = self._clean
        min_length = self._min_length
        scalars = _SCALARS
        if self._clean_keys.issuperset(value):
            for item in value.values():
                kind = type(item)
                if kind is str:
                    if len(item) >= min_length and item not in clean:
                        break
                elif kind not in scalars:
                    break
            else:
                return dict(value)
            copied = dict(value)
            for key, item in value.items():
                kind = type(item)
                if kind is str:
                    if len(item) >= min_length and item not in clean:
                        copied[key] = self._scan(item)
                elif kind not in scalars:
                    copied[key] = self._value(item, depth + 1, max_depth)
            return copied
        cache = self._key_cache
        marker = self.marker
        out: dict[Any, Any] = {}
        for key, item in value.items():
            try:
                sensitive = cache[key]
            except KeyError:
                sensitive = self._classify(key)
            if sensitive:
                out[key] = marker
                continue
            kind = type(item)
            if kind is str:
                out[key] = item if len(item) < min_length or item in clean else self._scan(item)
            elif kind in scalars:
                out[key] = item
            else:
                out[key] = self._value(item, depth + 1, max_depth)
        return out

    def __repr__(self) -> str:
        return (
            f"Redactor({len(self._keys)} key terms, {len(self._words)} word terms,"
            f" {len(self._patterns)} extra patterns, builtin_patterns={self._builtin},"
            f" max_depth={self.max_depth})"
        )


def _check_depth(max_depth: object) -> None:
    if type(max_depth) is not int or max_depth < 0:
        raise ValueError(f"max_depth must be an integer >= 0, got {max_depth!r}")


default_redactor = Redactor()
"""The policy of :func:`redact`, radiosonde's sinks and ``filter_sensitive_metadata``."""

_default_dict = default_redactor._dict
_derived: dict[tuple[int, tuple[str, ...]], Redactor] = {}
_DERIVED_LIMIT = 64


def redact(value: Any, *, extra_keys: Iterable[str] = (), max_depth: int | None = None) -> Any:
    """A redacted copy of ``value`` under the default policy plus ``extra_keys`` (key terms).

    Dicts (and other mappings), lists, tuples and sets are copied, recursively up to
    ``max_depth`` levels (default :data:`DEFAULT_MAX_DEPTH`; deeper containers become
    :data:`TRUNCATED`); strings have secrets replaced; anything else is returned as it is.
    """
    if not extra_keys:
        if max_depth is None and type(value) is dict:
            return _default_dict(value, 0, default_redactor.max_depth)
        return default_redactor.redact(value, max_depth=max_depth)
    if isinstance(extra_keys, str):
        extra_keys = (extra_keys,)
    extras = tuple(sorted(extra_keys))
    cache_key = (default_redactor.generation, extras)
    redactor = _derived.get(cache_key)
    if redactor is None:
        redactor = default_redactor.derive(extra_keys=extras)
        if len(_derived) >= _DERIVED_LIMIT:
            _derived.clear()
        _derived[cache_key] = redactor
    return redactor.redact(value, max_depth=max_depth)


def is_sensitive_key(key: object) -> bool:
    """True when the default policy redacts values under ``key``."""
    return default_redactor.is_sensitive_key(key)


def add_keys(*keys: str, word: bool = False) -> None:
    """Add key terms (``word=True``: whole-word terms) to the default policy."""
    default_redactor.add_keys(*keys, word=word)


def add_patterns(*patterns: str | re.Pattern[str]) -> None:
    """Add value patterns (regular expressions) to the default policy."""
    default_redactor.add_patterns(*patterns)
