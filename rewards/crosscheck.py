"""A numeric second opinion on math-verify's "equal".

math-verify compares numbers at limited precision and simplifies equations loosely, so it accepts
``1/2^99`` for ``1/2^98``, ``1-1/e`` for ``1+1/e`` and ``3x-1y+13=0`` for ``3x+4y+14=0`` (all
reported upstream). Here both parsed objects are evaluated at 50 significant digits (constants) or
at a few fixed points (expressions and equations in up to three variables); clearly different
values veto the match. The objects are the ones math-verify built; nothing here parses text.
"""
from __future__ import annotations

from fractions import Fraction

DIGITS = 50
EXACT_TOLERANCE = Fraction(1, 10**30)  # relative, for exact expressions evaluated at 50 digits
FLOAT_TOLERANCE = Fraction(1, 10**5)  # relative, when a side is a decimal like 0.333333
TINY = 1e-40  # both sides below this are "zero" (evalf noise)
_POINTS = ((Fraction(7, 10), Fraction(13, 10), Fraction(17, 10)),
           (Fraction(23, 10), Fraction(3, 10), Fraction(11, 10)),
           (Fraction(29, 20), Fraction(19, 10), Fraction(2, 5)))


def values_disagree(gold: object, pred: object, *, exact: bool = False) -> bool:
    """True when ``gold`` and ``pred`` (sympy objects from math-verify) evaluate to different values.

    ``exact`` forbids float tolerance (an integer truth). Anything that cannot be evaluated is not
    vetoed: the check only ever removes false positives.

    >>> from sympy import Integer, Rational
    >>> values_disagree(Rational(1, 2**98), Rational(1, 2**99))
    True
    >>> values_disagree(Integer(3), Rational(6, 2))
    False
    """
    from sympy import Basic, Expr, FiniteSet, Interval, Tuple
    from sympy.core.relational import Relational

    if not isinstance(gold, Basic) or not isinstance(pred, Basic):
        return False
    if isinstance(gold, Relational) and isinstance(pred, Relational):
        return _equations_disagree(gold, pred)
    if isinstance(gold, (Tuple, FiniteSet)) and type(gold) is type(pred) and len(gold.args) == len(pred.args):
        g_args, p_args = list(gold.args), list(pred.args)
        if isinstance(gold, FiniteSet):
            g_args, p_args = _by_value(g_args), _by_value(p_args)
            if g_args is None or p_args is None:
                return False
        return any(values_disagree(g, p, exact=exact) for g, p in zip(g_args, p_args))
    if isinstance(gold, Interval) and isinstance(pred, Interval):
        return (gold.left_open, gold.right_open) != (pred.left_open, pred.right_open) or any(
            values_disagree(g, p, exact=exact) for g, p in ((gold.start, pred.start), (gold.end, pred.end))
        )
    if isinstance(gold, Expr) and isinstance(pred, Expr):
        return _expressions_disagree(gold, pred, exact=exact)
    return False


def real_value(expr: object) -> Fraction | None:
    """The exact-enough value of a real constant sympy expression (50 digits), else ``None``."""
    value = _evaluate(expr, {})
    return value if isinstance(value, Fraction) else None


def _expressions_disagree(gold, pred, *, exact: bool) -> bool:
    from sympy import Float

    symbols = sorted(gold.free_symbols | pred.free_symbols, key=str)
    if len(symbols) > 3:
        return False
    floats = not exact and (gold.has(Float) or pred.has(Float))
    tolerance = FLOAT_TOLERANCE if floats else EXACT_TOLERANCE
    points = [dict(zip(symbols, point)) for point in _POINTS] if symbols else [{}]
    for point in points:
        g, p = _evaluate(gold, point), _evaluate(pred, point)
        if g is None or p is None:
            continue
        if _differ(g, p, tolerance):
            return True
    return False


def _equations_disagree(gold, pred) -> bool:
    """Two equations agree when lhs-rhs of one is a constant multiple of the other's."""
    from sympy import Eq, Expr

    if not (isinstance(gold, Eq) and isinstance(pred, Eq)):
        return False
    if not all(isinstance(side, Expr) for side in (gold.lhs, gold.rhs, pred.lhs, pred.rhs)):
        return False  # "x \in \mathbb{R}" reads as Eq(x, Reals): sides that are sets have no difference
    symbols = sorted(gold.free_symbols | pred.free_symbols, key=str)
    if not symbols or len(symbols) > 3 or gold.free_symbols != pred.free_symbols:
        return False
    f, h = gold.lhs - gold.rhs, pred.lhs - pred.rhs
    ratios = []
    for point in _POINTS:
        values = dict(zip(symbols, point))
        a, b = _evaluate(f, values), _evaluate(h, values)
        if not isinstance(a, Fraction) or not isinstance(b, Fraction):
            continue
        if abs(a) < Fraction(1, 10**12):
            if abs(b) > Fraction(1, 10**9):
                return True
            continue
        ratios.append(b / a)
    return any(_differ(r, ratios[0], EXACT_TOLERANCE) for r in ratios[1:])


def _evaluate(expr, point: dict) -> Fraction | complex | None:
    """``expr`` at ``point`` to 50 digits: a Fraction when real, a complex when not, None on failure."""
    from sympy import Rational

    try:
        value = (expr.subs({s: Rational(v.numerator, v.denominator) for s, v in point.items()}) if point else expr)
        value = value.evalf(DIGITS)
        if value.free_symbols or not value.is_number:
            return None
        re_part, im_part = value.as_real_imag()
        re_f, im_f = _fraction(re_part), _fraction(im_part)
    except Exception:  # sympy raises many kinds of errors on odd input; no verdict then
        return None
    if re_f is None or im_f is None:
        return None
    return re_f if abs(im_f) <= abs(re_f) * EXACT_TOLERANCE or im_f == 0 else complex(float(re_f), float(im_f))


def _fraction(number) -> Fraction | None:
    from sympy import Float, Integer, Rational

    number = number.evalf(DIGITS) if not isinstance(number, (Integer, Rational, Float)) else number
    if isinstance(number, (Integer, Rational)):
        return Fraction(int(number.p), int(number.q))
    if isinstance(number, Float) and number.is_finite:
        mantissa, exponent = number._mpf_[1], number._mpf_[2]  # exact binary value of the float
        value = Fraction(mantissa) * (Fraction(2) ** exponent)
        return -value if number._mpf_[0] else value
    return None


def _differ(a, b, tolerance: Fraction) -> bool:
    if isinstance(a, complex) or isinstance(b, complex):
        a, b = complex(a), complex(b)
        scale = max(abs(a), abs(b))
        return scale > TINY and abs(a - b) > float(tolerance) * scale
    scale = max(abs(a), abs(b))
    return scale > Fraction(TINY) and abs(a - b) > tolerance * scale


def _by_value(args: list) -> list | None:
    values = [_evaluate(a, {}) for a in args]
    if any(not isinstance(v, Fraction) for v in values):
        return None
    return [a for _, a in sorted(zip(values, args), key=lambda pair: pair[0])]
