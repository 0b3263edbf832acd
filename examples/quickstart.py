"""radiosonde quickstart: attach handlers, execute events, run spans, and see what arrives.

Run it with ``bash scripts/demo.sh`` (or ``python examples/quickstart.py``). Standard library
only, like the event core itself.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import radiosonde


def show(event: tuple[str, ...], measurements: dict[str, Any], metadata: dict[str, Any]) -> str:
    """One event on one line: its dotted name, measurements (ns shown as ms), then metadata."""
    parts = []
    for key, value in measurements.items():
        if key == "duration":
            parts.append(f"duration={value / 1e6:.2f}ms")
        elif key not in ("monotonic_time", "system_time"):
            parts.append(f"{key}={value}")
    for key, value in metadata.items():
        if key == "telemetry_span_context":
            parts.append(f"span=#{value}")
        elif key == "parent_span_context":
            parts.append(f"parent={'#' + str(value) if value else '-'}")
        elif key == "stacktrace":
            continue
        else:
            parts.append(f"{key}={getattr(value, '__name__', value)!s}")
    return f"{'.'.join(event):<30} {' '.join(parts)}"


def print_cart(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    """A handler for one exact event; ``config`` is what was given to attach."""
    print(f"  {config['label']:<9} {show(event, measurements, metadata)}")


def print_all(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
    """A prefix subscription: every event whose name starts with ("shop",)."""
    print(f"  {'[shop.*]':<9} {show(event, measurements, metadata)}")


def charge(amount: int) -> None:
    if amount > 100:
        raise ValueError(f"card declined for {amount}")
    time.sleep(0.002)


@radiosonde.span("shop.inventory.reserve", {"warehouse": "north"})
def reserve(items: int) -> int:
    time.sleep(0.001)
    return items


def main() -> None:
    print("1. one handler, one event (a tuple or a dotted string: the same event)")
    radiosonde.attach("cart-printer", ("shop", "cart", "add"), print_cart, {"label": "[cart]"})
    radiosonde.execute(("shop", "cart", "add"), {"items": 2}, {"user": "ada"})
    radiosonde.execute("shop.cart.add", {"items": 1}, {"user": "grace"})

    print("\n2. a prefix subscription on shop.* sees everything under shop")
    radiosonde.attach("shop-printer", ("shop", "*"), print_all)
    radiosonde.execute(("shop", "cart", "add"), {"items": 5}, {"user": "alan"})

    print("\n3. spans: start, then stop (nested spans name their parent)")
    with radiosonde.span(("shop", "checkout"), {"user": "ada"}) as checkout:
        reserve(2)
        with radiosonde.span(("shop", "payment", "charge")) as payment:
            charge(40)
            payment.metadata["status"] = "paid"  # results go into the stop event
            payment.measurements["amount"] = 40
        checkout.metadata["orders"] = 1

    print("\n4. a span whose body raises: an exception event, then the error goes on")
    try:
        with radiosonde.span(("shop", "payment", "charge")):
            charge(500)
    except ValueError as exc:
        print(f"  (the caller still gets it: {exc})")

    print("\n5. a handler that fails is detached and reported, never raised into the caller")
    radiosonde.attach(
        "failure-printer",
        radiosonde.FAILURE_EVENT,
        lambda event, m, md, c: print(f"  {'[failure]':<9} {md['handler_id']!r}: {md['reason']!r}"),
    )

    def broken(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        raise KeyError("price")

    radiosonde.attach("broken", ("shop", "cart", "add"), broken)
    radiosonde.execute(("shop", "cart", "add"), {"items": 3}, {"user": "edsger"})
    attached = ", ".join(handler.id for handler in radiosonde.list_handlers())
    print(f"  still attached: {attached}")

    for handler in radiosonde.list_handlers():
        radiosonde.detach(handler.id)


class OneLineFormatter(logging.Formatter):
    """The radiosonde logger's warning in one line (it carries the traceback too)."""

    def formatException(self, ei: Any) -> str:  # the name logging calls
        return ""


if __name__ == "__main__":
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OneLineFormatter(f"  {'[log]':<9} %(message)s"))
    logging.getLogger("radiosonde").addHandler(handler)
    main()
