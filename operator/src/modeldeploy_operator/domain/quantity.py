"""Kubernetes resource quantities (`500m`, `1Gi`, `2`) as exact decimals, to compare requests with limits."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation, localcontext

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)}
_DECIMAL |= {"k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12")}
_DECIMAL |= {"P": Decimal("1e15"), "E": Decimal("1e18")}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(?P<suffix>[a-zA-Z]*)$"
)

# The schema's pattern for quantities (same grammar as the API server's resource.Quantity).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value in base units; raises ValueError when it is not a valid quantity."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"invalid quantity {value!r}")
    suffix = match.group("suffix")
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation as error:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"invalid quantity {value!r}") from error
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    raise ValueError(f"invalid quantity {value!r}: unknown suffix {suffix!r}")


_DECIMAL_SUFFIX_OF = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY_SUFFIX_OF = {0: "", 1: "Ki", 2: "Mi", 3: "Gi", 4: "Ti", 5: "Pi", 6: "Ei"}
_NANO = Decimal("1e-9")


def canonical_quantity(value: str | int | float) -> str:
    """The quantity as the API server stores it (apimachinery's resource.Quantity canonical form), so
    that what we set and what the server gives back compare equal: "0.5" -> "500m", "1024Mi" -> "1Gi",
    "1000" -> "1k", "1.5Gi" -> "1536Mi", "0Mi" -> "0", 2 -> "2". Like the server: the format is kept
    (a binary suffix stays binary when the value is a whole number of at least 1024, else it falls back
    to decimal: "0.5Ki" -> "512"), precision past nano is rounded up ("1.0000000001" -> "1000000001n"),
    and a decimal or exponent form gets the largest exponent (a multiple of 3) with a whole mantissa.
    Raises ValueError when `value` is not a quantity. Idempotent: canonical(canonical(q)) == canonical(q)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    text = str(value).strip() if isinstance(value, int | str) else repr(value)
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"invalid quantity {value!r}")
    suffix = match.group("suffix")
    number = match.group("number")
    if suffix in _BINARY:
        binary, exponent_form = True, False
    elif suffix in _DECIMAL:
        binary, exponent_form = False, "e" in number.lower()
    else:
        raise ValueError(f"invalid quantity {value!r}: unknown suffix {suffix!r}")
    with localcontext() as exact:
        exact.prec = 200  # the default 28 digits would round "1E" in nano units
        amount = parse_quantity(text)
        sign, amount = ("-" if amount < 0 else ""), abs(amount)
        amount = amount.quantize(
            _NANO, rounding=ROUND_CEILING
        )  # the server keeps nano precision, rounding up
    if amount == 0:
        return "0"
    if binary and amount >= 1024 and amount == amount.to_integral_value():
        mantissa, exponent = int(amount), 0
        while mantissa % 1024 == 0:
            mantissa, exponent = mantissa // 1024, exponent + 1
        if exponent in _BINARY_SUFFIX_OF:  # past "Ei" the server falls back to decimal, as below
            return f"{sign}{mantissa}{_BINARY_SUFFIX_OF[exponent]}"
    # mantissa * 10**exponent, every factor of 10 taken out of the mantissa, then the exponent brought
    # down to a multiple of 3 (the server's AsCanonicalBytes)
    digits, exponent10 = _whole_mantissa(amount)
    while digits % 10 == 0:
        digits, exponent10 = digits // 10, exponent10 + 1
    shift = exponent10 % 3
    digits, exponent10 = digits * 10**shift, exponent10 - shift
    if exponent_form:
        return f"{sign}{digits}" + (f"e{exponent10}" if exponent10 else "")
    if exponent10 in _DECIMAL_SUFFIX_OF:
        return f"{sign}{digits}{_DECIMAL_SUFFIX_OF[exponent10]}"
    return f"{sign}{digits}e{exponent10}"


def _whole_mantissa(amount: Decimal) -> tuple[int, int]:
    """(m, e) with amount == m * 10**e and m a whole number (amount > 0)."""
    _, digit_tuple, exponent = amount.as_tuple()  # exact: no rounding to the context's precision
    assert isinstance(exponent, int)  # finite: parse_quantity admits no NaN or infinity
    return int("".join(map(str, digit_tuple))), exponent
