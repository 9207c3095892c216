"""The `math` reward, category by category. Every row is (answer, ground truth, extra_info, expected)."""
import time

import pytest

from rewards.math_answer import math_reward
from rewards.numbers import normalize
from rewards.safety import unsafe_reason

CHOICES = {"choices": ["2", "4", "3", "5"]}


def tagged(answer: str) -> str:
    return f"<think>Let me work it out.</think> <answer>{answer}</answer>"


def check(answer, truth, extra, expected):
    assert math_reward(tagged(answer), truth, extra_info=extra) == expected, (answer, truth, extra)


NUMBERS = [
    ("3", "3", 1.0), ("3.0", "3", 1.0), ("3.00", "3.0", 1.0), ("+3", "3", 1.0), ("03", "3", 1.0),
    ("4", "3", 0.0), ("-3", "3", 0.0), ("\u22123", "-3", 1.0), ("\u2212 3", "-3", 1.0),
    ("1,000", "1000", 1.0), ("1,000,000", "1000000", 1.0), ("1{,}000", "1000", 1.0), ("1\\,000", "1000", 1.0),
    ("1.5e3", "1500", 1.0), ("1.5E3", "1500", 1.0), ("1.5 \\times 10^{3}", "1500", 1.0), ("1.5\u00d710^3", "1500", 1.0),
    ("2e-3", "0.002", 1.0), ("1.5e3", "150", 0.0), ("0.5", ".5", 1.0), ("12", "12.0001", 0.0),
    ("2.9999999", "3", 0.0),  # integers compare exactly; math-verify alone rounds this to 3
    ("123456789012345679", "123456789012345678", 0.0), ("123456789012345678", "123456789012345678", 1.0),
    ("\uff13", "3", 1.0),  # full-width digit
    ("5!", "5", 0.0), ("5!", "120", 1.0), ("(2+1)!", "6", 1.0),  # "!" after a number is a factorial, not a full stop
    ("{3}", "3", 1.0), ("$3$", "3", 1.0), ("3.", "3", 1.0),
    # SI grouping by spaces (plain, thin or no-break), whole groups of three only
    ("1 000", "1000", 1.0), ("1\u2009000", "1000", 1.0), ("10 000", "10000", 1.0), ("1 000 000", "1000000", 1.0),
    ("1 000.5", "1000.5", 1.0), ("1000", "1 000", 1.0), ("1 000", "100", 0.0), ("1 00", "100", 0.0),
    ("10 100 1000", "101001000", 0.0), ("1000 10 100", "100010100", 0.0), ("12 3456", "123456", 0.0), ("1\\ 000", "1000", 1.0),
    ("(1 000, 2 000)", "(1000, 2000)", 1.0), ("(1 000, 2 000)", "(0, 2000)", 0.0), ("\\{1 000, 2 000\\}", "\\{0, 2000\\}", 0.0),
    ("(1 000,2 000)", "(0,0)", 0.0), ("(1 000,2 000)", "(1000, 2000)", 1.0), ("(3,1 000)", "(3,0)", 0.0),
    ("1 000/4", "250", 1.0), ("1 000/4", "0", 0.0), ("(1 000/4, 1)", "(0, 1)", 0.0), ("1 500/3", "500", 1.0),
    ("1  000", "1000", 1.0), ("1  000", "0", 0.0), ("1 \\,000", "1000", 1.0), ("1234\\ 567", "1234567", 0.0),
]

LATEX = [
    ("\\frac{14}{2}", "7", 1.0), ("\\dfrac{1}{2}", "0.5", 1.0), ("\\tfrac{1}{2}", "\\frac{1}{2}", 1.0),
    ("1/2", "\\frac{1}{2}", 1.0), ("-\\frac{1}{2}", "-0.5", 1.0), ("\\frac{-1}{2}", "-\\frac12", 1.0),
    ("\\frac{1}{3}", "\\frac{2}{6}", 1.0), ("\\frac{1}{3}", "0.33", 0.0),
    ("2\\sqrt{2}", "\\sqrt{8}", 1.0), ("\\sqrt{2}", "\\sqrt{3}", 0.0), ("\\frac{\\sqrt{3}}{2}", "\\sin(\\pi/3)", 1.0),
    ("\\pi", "3.14159265", 1.0), ("2\\pi", "\\pi", 0.0), ("\u03c0", "\\pi", 1.0),
    ("\u00bd", "\\frac{1}{2}", 1.0), ("\u00be", "0.75", 1.0), ("\u2153", "1/3", 1.0), ("1\u00bd", "1.5", 1.0),  # vulgar
    ("2 \u2154", "8/3", 1.0), ("\u00bd", "0.25", 0.0), ("1\u2044 2", "0.5", 1.0), ("x\u00bd", "\\frac{x}{2}", 1.0),  # fractions
    ("1\u00bd h", "90 min", 1.0), ("3\u00bd%", "3.5%", 1.0), ("1 3/4", "1.75", 1.0), ("1 3/4", "13/4", 0.0),  # mixed
    ("-2\\frac{1}{2}", "-2.5", 1.0), ("2\\frac{1}{2}", "1", 0.0), ("2\\frac{1}{2}", "2.5", {"precision": 1}, 1.0),  # numbers
    ("1 2/3", "1", 0.0), ("1", "1 2/3", 0.0), ("5 1/3", "2", 0.0), ("1 1/3", "0.666667", 0.0), ("2 1/3 apples", "1", 0.0),
    ("x = 1 3/4", "1", 0.0), ("x = 1 3/4", "1.75", 1.0), ("(1 3/4, 2)", "(1, 2)", 0.0), ("(1 3/4, 2)", "(1.75, 2)", 1.0),
    ("- 2 1/2", "-1.5", 0.0), ("- 2 1/2", "-2.5", 1.0), ("1 125/128", "1.9765625", 1.0),  # (math-verify: (a + b)/c)
    ("x = 1\\,3/4", "1", 0.0), ("1~3/4", "1.75", 1.0), ("(1\\,3/4, 2)", "(1, 2)", 0.0), ("2 1/2 apples", "2.5", 1.0),
    ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", 0.0),  # math-verify accepts this one; the cross-check does not
    ("\\frac{1}{2^{98}}", "\\frac{1}{2^{98}}", 1.0), ("2^{-98}", "\\frac{1}{2^{98}}", 1.0),
    ("1+\\frac{1}{e}", "1-\\frac{1}{e}", 0.0), ("1-\\frac{1}{e}", "1-e^{-1}", 1.0),
    ("0.333333", "\\frac{1}{3}", 1.0), ("0.3333", "\\frac{1}{3}", 0.0),
    ("x^2+2x+1", "(x+1)^2", 1.0), ("x^2+2x+2", "(x+1)^2", 0.0),
    ("\\text{3}", "3", 1.0), ("\\mathbf{3}", "3", 1.0), ("\\left(3\\right)", "3", 1.0),
]

UNITS = [
    # money or degrees against a quantity of another unit: another kind of quantity, though the number agrees
    ("5 \\text{ cents}", "\\$5", 0.0), ("4\\sqrt{2}\u00b0", "4\\sqrt{2} cm", 0.0), ("30 cm", "30\u00b0", 0.0),
    ("\\$5", "5 cm", 0.0), ("5 dollars", "\\$5", 1.0), ("5 lb", "5 pounds", 1.0), ("5", "\\$5", 1.0), ("4\\sqrt{2}", "4\\sqrt{2} cm", 1.0),
    ("5 cm", "5", 1.0), ("5\\text{ cm}", "5", 1.0), ("5 cm", "5 cm", 1.0), ("5 centimeters", "5 cm", 1.0),
    ("5 m", "5 cm", 0.0), ("5 cm^2", "5", 1.0), ("5 square units", "5", 1.0), ("6 cm", "5", 0.0),
    ("30^\\circ", "30", 1.0), ("30^{\\circ}", "30", 1.0), ("30\u00b0", "30", 1.0), ("30 degrees", "30", 1.0),
    # a temperature's scale may be left out, not changed
    ("5\u00b0C", "5\u00b0F", 0.0), ("5^\\circ C", "5^\\circ F", 0.0), ("5 degrees F", "5\u00b0F", 1.0), ("5\u00b0", "5\u00b0C", 1.0),
    ("5\u00b0C", "5", 1.0), ("5\u00b0F", "5", {"unit": "\u00b0C"}, 0.0), ("5\u00b0C", "5", {"unit": "\u00b0C"}, 1.0),
    ("5\u2103", "5\u2109", 0.0), ("5\u2103", "5\u00b0C", 1.0), ("5\u00b0F", "5", {"unit": "degrees Celsius"}, 0.0),
    ("5\u00b0C", "5", {"unit": "Celsius"}, 1.0), ("5 degrees Fahrenheit", "5\u00b0C", 0.0), ("5 degrees Celsius", "5\u00b0C", 1.0),
    ("5 K", "5\u00b0C", 0.0), ("5\u00b0C", "5", {"unit": "K"}, 0.0),  # nor another unit
    ("\\$5", "5", 1.0), ("$5", "5", 1.0), ("5 dollars", "5", 1.0), ("\\$5.50", "5.5", 1.0), ("\u20ac5", "5", 1.0),
    ("50\\%", "50", 1.0), ("50%", "50", 1.0), ("50 percent", "50", 1.0), ("50%", "0.5", 1.0),
    ("0.5", "50\\%", 1.0), ("0.5", "50", 0.0), ("50%", "5", 0.0),
    ("5\\%", "5 cm", 0.0), ("5 cm", "5\\%", 0.0), ("5\\%", "5\u00b0C", 0.0),  # a percentage is no quantity of a unit
    ("30 rad", "30\u00b0", 0.0), ("30\u00b0", "30 rad", 0.0), ("5\u00b0", "5 cm", 0.0), ("30\\%", "30\u00b0", 0.0),  # nor
    ("30 degrees", "30\u00b0", 1.0), ("30", "30\u00b0", 1.0), ("30 rad", "30", {"unit": "\u00b0"}, 0.0),  # are degrees
    # an expected unit "%" or "°" is the truth's: "5" with unit "%" is 5%, so 500% is not it and 0.05 is
    ("500%", "5", {"unit": "%"}, 0.0), ("5%", "5", {"unit": "\\%"}, 1.0), ("0.05", "5", {"unit": "%"}, 1.0),
    ("5", "5", {"unit": "percent"}, 1.0), ("5%", "5", {"unit": "cm"}, 0.0), ("30\u00b0", "30", {"unit": "cm"}, 0.0),
    ("30%", "30", {"unit": "\u00b0"}, 0.0), ("30\u00b0", "30", {"unit": "%"}, 0.0), ("30\u00b0", "30", {"unit": "degrees"}, 1.0),
    ("3x", "3", 0.0),  # "x" is not a unit
    ("2n", "2", 0.0), ("2 s", "2", 1.0), ("5 m", "5", 1.0), ("5 km", "5 m", 0.0),
    # another unit of the same quantity is converted exactly; one of another quantity is another answer
    ("5 m", "500 cm", 1.0), ("500 cm", "5 m", 1.0), ("5 m", "50 cm", 0.0), ("2 ft", "24 in", 1.0), ("1 in", "2.54 cm", 1.0),
    ("1.5 h", "90 min", 1.0), ("1 lb", "16 oz", 1.0), ("5 kg", "5000 g", 1.0), ("36 km/h", "10 m/s", 1.0),
    ("1 m^2", "10000 cm^2", 1.0), ("1 m^2", "100 cm^2", 0.0), ("1 km", "1000", {"unit": "m"}, 1.0),
    ("0.05 m", "5", {"unit": "cm"}, 1.0), ("5 m", "5", {"unit": "cm"}, 0.0), ("5 m", "5 s", 0.0), ("5 m", "300 s", 0.0),
    ("1/3 m", "33.33 cm", 0.0), ("1/3 m", "33.33 cm", {"precision": 2}, 1.0),
    ("5 t", "5000 kg", 0.0), ("1 gal", "3.785 l", 0.0),  # a ton or a gallon is not one size everywhere
    ("1 l", "1000 cm^3", 1.0), ("1 cubic decimeter", "1 liter", 1.0), ("5 decimetres", "50 cm", 1.0), ("1 cubic m/s", "100 cubic cm/s", 0.0), ("1 cubic m/s", "1 cubic m/s", 1.0),
    ("5 m", "500 cm", {"unit": "%"}, 0.0), ("5 m", "500 cm", {"unit": "\u00b0"}, 0.0), ("5 m%", "500 cm", 0.0),
    ("5 m", "500 cm%", 0.0),  # converted, still no percentage nor angle
    ("9.8 m/s^2", "980 cm/s^2", 1.0), ("2.7 g/cm^3", "2700 kg/m^3", 1.0), ("980 cm/s^2", "9.8", {"unit": "m/s^2"}, 1.0),
    ("9.8 sq m/s", "9.8", {"unit": "m/s^2"}, 0.0), ("1 cubic m/s", "1000000 cubic cm/s", 1.0),  # a power word: the first unit's
    # a count may name what it counts (CLEVR: "How many cubes?" "3 cubes"), but not another thing, and no word
    # that changes the value, doubts it or joins another number
    ("5 apples", "5", 1.0), ("3 red cubes", "3", 1.0), ("\\text{3 cubes}", "3", 1.0), ("1 apple", "1 apples", 1.0),
    ("5", "5 apples", 1.0), ("5 apples", "5 pears", 0.0), ("4 apples", "5", 0.0), ("5 apples", "5", {"unit": "cm"}, 0.0),
    ("5 million", "5", 0.0), ("3 dozen", "3", 0.0), ("3 halves", "3", 0.0), ("3 pi", "3", 0.0), ("5 hundred", "5", 0.0),
    ("5 kHz", "5", 0.0), ("3 Cubes", "3", 1.0), ("3 CUBES", "3 cubes", 1.0), ("3 maybe", "3", 0.0), ("3 wrong", "3", 0.0), ("5 below zero", "5", 0.0), ("2 seven", "2", 0.0),
    ("2 ab", "2", 0.0), ("2ab", "2", 0.0), ("2 c d", "2", 0.0), ("2", "2 bc", 0.0),  # variables, though math-verify drops them
    # ... but against an expression with variables too, math-verify decides
    ("\\frac{x}{2}", "\\frac{1}{2} x", 1.0), ("a\\sqrt{2}", "\\sqrt{2} a", 1.0), ("r^2\\pi", "\\pi r^2", 1.0),
    ("\\frac{1}{2}bh", "\\frac{bh}{2}", 1.0), ("x \\cdot 2", "2x", 1.0), ("x+x", "2x", 1.0), ("2r\\pi", "2\\pi r", 1.0),
    ("3 apples or 4 apples", "3", 0.0), ("3 apples, 4 apples", "3", 0.0), ("3 cats and dogs", "3", 0.0),
    ("3 twelfths", "3", 0.0), ("5 zillion", "5", 0.0), ("5 likely", "5", 0.0), ("12 pis", "12", 0.0), ("5 minimum", "5", 0.0),
    ("2 mln", "2", 0.0), ("0.3 recurring", "0.3", 0.0), ("5 might", "5", 0.0), ("2 ABC", "2", 0.0), ("3 CUBES", "3", 1.0),
    ("5 twice", "5", 0.0), ("5 extra apples", "5", 0.0), ("2 xyz", "2", 0.0), ("2 abc", "2", 0.0), ("5 times", "5", 1.0),
    # a word the unit table does not know may be a unit: a count stands for a plain number only, never for a unit
    ("5 furlongs", "5 cm", 0.0), ("5 milligrams", "5 g", 0.0), ("5 apples", "5 m/s", 0.0), ("5 km", "5 amps", 0.0),
    ("5 celsius", "5\u00b0F", 0.0), ("30 gradians", "30^\\circ", 0.0), ("5 days", "5 hrs", 0.0),
    # another unit is another unit, known or not (math-verify drops the unit words it knows: "5 N·m" read as 5)
    ("5 N\u00b7m", "5 m", 0.0), ("5 kg\\cdot m", "5 m", 0.0), ("5 V\u00b7s", "5 s", 0.0), ("5 kg\u00b7m", "5 N\u00b7m", 0.0),
    ("5 N\\cdot m", "5 N\u00b7m", 1.0), ("x = 5 m", "5 m", 1.0), ("2.5 \\times 2 m", "5 m", 1.0),
    ("5\\,\\text{m}", "5 m", 1.0), ("5\\;\\mathrm{cm}", "5 cm", 1.0),  # a LaTeX space before a unit word
    ("12\\pi m", "12\\pi cm", 0.0), ("12\\pi\\text{ cm}", "12\\pi cm", 1.0),
    # letters in the number make it an expression, whose variables are no unit
    ("-3x + 2x^2", "2x^2 - 3x", 1.0), ("-2y + 3x", "3x - 2y", 1.0), ("2 a b", "2ab", 1.0), ("2\\pi r", "2\\pi s", 0.0),
    # a compound unit is its base units' powers, however written
    ("5 m s^{-1}", "5 m/s", 1.0), ("5 m\\cdot s^{-1}", "5 m/s", 1.0), ("10 meters per second", "10 m/s", 1.0),
    ("5 km h^-1", "5 km/h", 1.0), ("5 m/s^2", "5 m s^{-2}", 1.0), ("5 m/s", "5 s/m", 0.0), ("5 J/kg K", "5 J kg^{-1} K^{-1}", 1.0),
    ("\\frac{1}{2} m/s", "0.5 m s^{-1}", 1.0), ("\\frac{1}{3} m s^{-1}", "0.33 m/s", 0.0),
    # a symbol's case is its meaning where lower-casing makes another unit; elsewhere case is forgiven
    ("5 Nm", "5 N\u00b7m", 1.0), ("5 Nm", "5 nm", 0.0), ("5 nm", "5 Nm", 0.0), ("5 N", "5 newtons", 1.0), ("5 CM", "5 cm", 1.0),
    ("5 MW", "5 mW", 0.0), ("5 MPa", "5 mPa", 0.0), ("5 Mm", "5 mm", 0.0), ("5 mHz", "5 MHz", 0.0),  # mega- is not milli-
    ("5 MPa", "5 MPa", 1.0), ("5 MW", "5", 1.0), ("5 MM", "5 mm", 1.0),  # (capitals throughout: case forgiven)
    ("5 listen", "5 silent", 0.0),  # unknown words are compared as written, not as letters
    # a known unit may be left out on either side, after a radical or pi too (Geometry3K writes both ways)
    ("12\\pi \\text{ cm}^2", "12\\pi", 1.0), ("16\\pi", "16\\pi \\text{ cm}^2", 1.0), ("8\\sqrt{2} \\text{ units}", "8\\sqrt{2}", 1.0),
    ("\\frac{25\\pi}{2} cm^2", "\\frac{25\\pi}{2}", 1.0), ("13\\pi \\text{ cm}^2", "12\\pi", 0.0), ("2\\pi r", "2\\pi", 0.0),
]

PRECISION = [
    ("3.14", "3.14159", {"precision": 2}, 1.0), ("3.15", "3.14159", {"precision": 2}, 0.0),
    ("x = 1.5", "1.5", {"precision": 1}, 1.0), ("AB = 5.2", "5.2", {"precision": 1}, 1.0),  # an equation's value: its
    ("x = \\frac{3}{2}", "1.5", {"precision": 1}, 1.0), ("x = 1.6", "1.5", {"precision": 1}, 0.0),  # right-hand side
    ("\\ne 1.5", "1.5", {"precision": 1}, 0.0), ("2x = 3", "3", {"precision": 1}, 0.0),  # (x is 1.5)
    ("3.1416", "3.14159", {"precision": 2}, 1.0), ("3.1", "3.14", {"precision": 1}, 1.0),
    ("2.5", "2.45", {"precision": 1}, 1.0),  # half away from zero
    ("\\frac{1}{3}", "0.33", {"precision": 2}, 1.0), ("\\sqrt{2}", "1.41", {"precision": 2}, 1.0),
    ("\\sqrt{3}", "1.41", {"precision": 2}, 0.0), ("1.4", "1.41", {"precision": "2"}, 0.0),
    ("7", "7", {"answer_type": "integer"}, 1.0), ("7.0", "7", {"answer_type": "integer"}, 1.0),
    ("7.5", "7", {"answer_type": "integer"}, 0.0), ("\\frac{14}{2}", "7", {"answer_type": "integer"}, 1.0),
    ("0.1", "0.1", {"answer_type": "float", "precision": 1}, 1.0),
    ("[1, 2, 3]", "[1,2,3]", {"answer_type": "list"}, 1.0), ("[1, 2]", "[1,2,3]", {"answer_type": "list"}, 0.0),
    ("[3, 2, 1]", "[1,2,3]", {"answer_type": "list"}, 0.0), ("1.05, 2", "[1.1, 2]", {"answer_type": "list", "precision": 1}, 1.0),
    ("4 cm", "4", {"unit": "cm"}, 1.0), ("4 m", "4", {"unit": "cm"}, 0.0), ("4", "4", {"unit": "cm"}, 1.0),
    # the expected unit's letters ending another unit are not the unit: "5 cm" is not 5 m
    ("5 cm", "5", {"unit": "m"}, 0.0), ("5 km", "5", {"unit": "m"}, 0.0), ("5 mm", "5", {"unit": "m"}, 0.0),
    ("5m", "5", {"unit": "m"}, 1.0), ("5 m", "5", {"unit": "m"}, 1.0), ("5 km", "5", {"unit": "km"}, 1.0),
    ("5 \u00b5m", "5", {"unit": "m"}, 0.0), ("5 cm^2", "5", {"unit": "m^2"}, 0.0), ("5 hours", "5", {"unit": "s"}, 0.0),
    ("5 seconds", "5", {"unit": "s"}, 1.0),
    # an expected unit the unit table does not know is still compared: 5 kPa is not 5 Pa
    ("5 kPa", "5", {"unit": "Pa"}, 0.0), ("5 Pa", "5", {"unit": "Pa"}, 1.0), ("5 ton", "5", {"unit": "N"}, 0.0),
    ("5 N\u00b7m", "5", {"unit": "m"}, 0.0), ("x = 5 m", "5", {"unit": "N\u00b7m"}, 0.0), ("5 N\u00b7m", "5", {"unit": "N\u00b7m"}, 1.0),
    ("5 Nm", "5", {"unit": "nm"}, 0.0), ("5 nm", "5", {"unit": "Nm"}, 0.0), ("5 m s^-1", "5", {"unit": "m/s"}, 1.0),
    ("5 MW", "5", {"unit": "mW"}, 0.0), ("5 mPa", "5", {"unit": "MPa"}, 0.0), ("5 MPa", "5", {"unit": "MPa"}, 1.0),
    ("3.14159 m s^-1", "3.14", {"unit": "m/s", "precision": 2}, 1.0), ("3.2 m s^-1", "3", {"unit": "m/s", "answer_type": "integer"}, 0.0),
    # a key that pandas filled with NaN for the rows without it is absent (MathVista's precision), not "nan"
    ("3", "3", {"precision": float("nan")}, 1.0), ("3 cm", "3", {"unit": float("nan")}, 1.0), ("3.5", "3", {"precision": "nan"}, 0.0),
    ("12 cm\u00b2", "12", {"unit": "cm\u00b2"}, 1.0), ("12 square centimeters", "12", {"unit": "cm\u00b2"}, 1.0),
    ("12 m^2", "12", {"unit": "cm\u00b2"}, 0.0),
]

MULTIPLE_CHOICE = [
    ("C", "C", 1.0), ("(C)", "C", 1.0), ("c", "C", 1.0), ("C.", "C", 1.0), ("C. 3", "C", 1.0), ("C) 3", "C", 1.0),
    ("(C) 3", "C", 1.0), ("The answer is C", "C", 1.0), ("The answer is (C).", "C", 1.0), ("Answer: C", "C", 1.0),
    ("Option C", "C", 1.0), ("3", "C", 1.0), ("3.0", "C", 1.0), ("B", "C", 0.0), ("4", "C", 0.0),
    ("C. 5", "C", 0.0),  # the letter and the text name different options
    ("A or C", "C", 0.0), ("A, C", "C", 0.0), ("E", "C", 0.0), ("C", "3", 1.0), ("C", "(C)", 1.0),
    ("**C**", "C", 1.0), ("**B**", "C", 0.0), ("__3__", "C", 1.0),  # a chat model's markdown bold
    ("C 3", "C", 1.0), ("C 5", "C", 0.0), ("A 3", "C", 0.0), ("I think 3", "C", 0.0),  # a letter, a space, its text
    ("\u2260 3", "C", 0.0), ("\u4e0d\u662f 3", "C", 0.0),  # "not 3" names no option
    # hedges in which one part names no option are no answer (GRPO would learn to hedge)
    ("Either A or C", "C", 0.0), ("It could be A or C", "C", 0.0), ("possibly A, C", "C", 0.0), ("maybe A; C", "C", 0.0),
    ("either (A) or (C)", "C", 0.0), ("Either 2 or 3", "C", 0.0), ("between 2 or 3", "C", 0.0),
    ("C, 3", "C", 1.0), ("C or C", "C", 1.0), ("The answer is: C", "C", 1.0), ("The answer is: 3", "C", 1.0),
    ("C", "C, the third option", 1.0),  # a ground truth is trusted: its words are no hedge
]

TEXT = [
    ("red", "red", {}, 1.0), ("Red.", "red", {}, 1.0), ("RED", "red", {}, 1.0), ("\\text{red}", "red", {}, 1.0),
    ("blue", "red", {}, 0.0), ("Yes", "yes", {}, 1.0), ("no", "yes", {}, 0.0), ("yes or no", "yes", {}, 0.0),
    ("a cube", "cube", {}, 0.0), ("big cylinder", "big cylinder", {}, 1.0),
    ("Yes", "yes", {"answer_type": "text"}, 1.0), ("3", "three", {"answer_type": "text"}, 0.0),
    ("B", "B", {}, 1.0), ("(b)", "B", {}, 1.0), ("The answer is B", "B", {}, 1.0), ("A", "B", {}, 0.0),
]

SETS_INTERVALS_EQUATIONS = [
    ("\\{1, 2\\}", "\\{2, 1\\}", 1.0), ("\\{1, 3\\}", "\\{1, 2\\}", 0.0), ("{1, 2}", "\\{1,2\\}", 1.0),
    ("\\{\\frac{1}{2^{99}}\\}", "\\{\\frac{1}{2^{98}}\\}", 0.0),
    ("(1, 2]", "(1, 2]", 1.0), ("(1, 2)", "(1, 2]", 0.0), ("[1, 3)", "[1,3)", 1.0),
    ("(-\\infty, 2]", "(-\\infty, 2]", 1.0), ("(1, 2)", "(2, 1)", 0.0),
    ("y = 2x + 1", "2x - y + 1 = 0", 1.0), ("3x+4y+14=0", "3x-1y+13=0", 0.0), ("x = 3", "3", 1.0),
    ("x=4", "3", 0.0), ("(1, 2)", "(1,2)", 1.0),
    ("m\\angle ABC = 30", "30", 1.0), ("m\\angle ABC = 31", "30", 0.0),  # a named angle is no prose
    ("x \\in \\mathbb{R}", "x \\in \\mathbb{R}", 1.0), ("x \\in \\mathbb{Z}", "x \\in \\mathbb{R}", 0.0),  # (raised TypeError)
]

HEDGING = [
    ("3 or 4", "3", 0.0), ("3, 4", "3", 0.0), ("3; 4", "3", 0.0), ("3 \\text{ or } 4", "3", 0.0),
    ("either 3 or 3", "3", 0.0), ("3, 3", "3", 1.0),  # the same answer twice is not a hedge
    ("1, 2", "1, 2", 1.0),  # a list truth takes a list answer
    ("3\u30014", "3", 0.0), ("3\u62164", "3", 0.0), ("3 \u6216 4", "4", 0.0),  # a CJK list comma; "或" (or)
]

# A relation, negation or bound is no value (math-verify reads the number after it), unless the truth has it too.
RELATIONS = [
    ("\u2260 4", "4", 0.0), ("\\neq 4", "4", 0.0), ("\\ne 4", "4", 0.0), ("x\\not=4", "4", 0.0), ("\\neg 4", "4", 0.0),
    ("< 4", "4", 0.0), ("\\le 4", "4", 0.0), ("\u2265 4", "4", 0.0), ("\\gg 4", "4", 0.0), ("4 \\neq", "4", 0.0),
    ("\\nleq 4", "4", 0.0), ("\\ngeq 4", "4", 0.0), ("\u226e 4", "4", 0.0), ("\u2a7d 4", "4", 0.0), ("3 \u2228 4", "4", 0.0),
    ("x \\leq 3", "x \\le 3", 1.0), ("x = 4", "4", 1.0), ("\\approx 4", "4", 1.0), ("(2, \\infty)", "(2,\\infty)", 1.0),
    ("x > 2", "x \\gt 2", 1.0), ("0 < a", "a>0", 1.0), ("x \\geq 3", "3 \\le x", 1.0),  # either direction
    # a bound on one letter is the interval it gives, against an interval that is no point ("(2, 5)" may be one)
    ("x > 2", "(2,\\infty)", 1.0), ("2 < x", "(2,\\infty)", 1.0), ("x \\ge 2", "[2,\\infty)", 1.0),
    ("x \\ge 2", "(2,\\infty)", 0.0), ("x > 3", "(2,\\infty)", 0.0), ("x < 2", "(2,\\infty)", 0.0),
    ("x \\leq -1", "(-\\infty, -1]", 1.0), ("-1 \\le x < 3", "[-1, 3)", 1.0), ("3 > x \\ge -1", "[-1, 3)", 1.0),
    ("2 < x \\le 5", "(2, 5]", 1.0), ("2 < x < 5", "(2, 5)", 0.0), ("x > \\frac{1}{2}", "(0.5, \\infty)", 1.0),
    ("x > y", "(2,\\infty)", 0.0), ("x > 2", "2", 0.0), ("2 < x > 3", "(2,\\infty)", 0.0),
    ("2 \\gtq x", "(2,\\infty)", 0.0), ("x \\geslant 2", "(-\\infty,2)", 0.0), ("e > 2", "(2,\\infty)", 0.0),  # (raised)
    ("x > 2 \\approx 3", "(2,\\infty)", 0.0), ("x > \\frac{\\sqrt{2}}{2}", "(\\frac{\\sqrt2}{2},\\infty)", 1.0),
    ("P(A \\mid B) = 0.3", "0.3", 1.0), ("\\lim_{x \\to 2} f(x) = 3", "3", 1.0),  # \mid and \to are no relations here
    ("\\{x \\mid x > 2\\}", "\\{x | x > 2\\}", 1.0), ("(-\\infty, 1) \\cup (2, \\infty)", "(-\u221e,1)\u222a(2,\u221e)", 1.0),
    ("<1, 2>", "\\langle 1, 2 \\rangle", 1.0),  # a vector's angle brackets
    # outside brackets an arrow or a divides sign is a relation: "3 \\to 4" is no 4
    ("3 \\to 4", "4", 0.0), ("3 \\mid 4", "4", 0.0), ("3 \u2192 4", "4", 0.0),
    ("a \\iff 4", "4", 0.0), ("3 \\nmid 4", "4", 0.0), ("3 \\to 4", "3 \\to 4", 1.0),
    # an equation stands for its right-hand side when its left names the value, not when it is a term of it
    ("2x = 3", "3", 0.0), ("x + 1 = 3", "3", 0.0), ("x^2 = 9", "9", 0.0), ("-x = 3", "3", 0.0), ("f(2) = 3", "3", 1.0),
    ("m\\angle ABC = 30", "30", 1.0), ("x_1 = 4", "4", 1.0), ("\\frac{x}{2} = 3", "3", 0.0), ("x \\cdot 2 = 6", "6", 0.0),
    ("a + b = 7", "7", 1.0), ("\\frac{1}{2}bh = 12", "12", 1.0),  # several names: the value they name
    ("9 \\times 2 = 18", "18", 1.0), ("\\frac{120}{4} = 30", "30", 1.0), ("\\binom{5}{2} = 10", "10", 1.0),  # worked out
    ("2 \\times 3.14 \\times 5 = 31.4", "31.4", 1.0), ("16 - 3 - 4 = 8", "8", 0.0),  # (a false equation)
    ("2x = 6 \\Rightarrow x = 3", "3", 1.0), ("2x = 6 \\implies x = 4", "3", 0.0),  # a derivation: what it concludes
]

# Words of other scripts are prose, as English words are ("不是 3": "not 3"); Greek letters, µ and Å are math.
OTHER_SCRIPTS = [
    ("\u4e0d\u662f 3", "3", 0.0), ("\u81f3\u5c11 3", "3", 0.0), ("\u043d\u0435 3", "3", 0.0), ("\uff4e\uff4f\uff54 3", "3", 0.0),
    ("\U0001d427\U0001d428\U0001d42d 3", "3", 0.0), ("3\u00b0\uff08\u4e0d\u786e\u5b9a\uff09", "3", 0.0),
    ("\u03b8 = 30", "30", 1.0), ("5 \u00b5m", "5 \u00b5m", 1.0), ("\u03c0", "\\pi", 1.0), ("2\u03c0", "2\\pi", 1.0),
    ("\U0001d465 = 3", "3", 1.0), ("x \\in \u211d", "x \\in \\mathbb{R}", 1.0),  # a math-italic x; the reals' R
    ("\u5927\u7ea6 3", "3", 0.0), ("3 \u0438\u043b\u0438 4", "3", 0.0),  # "about 3", "3 or 4"
    ("3 \u5398\u7c73", "3\u5398\u7c73", 1.0), ("3", "3\u5398\u7c73", 1.0), ("3\u5398\u7c73", "3", 1.0), ("3 \u0441\u043c", "3", 1.0),
    ("3\u4e2a", "3", 1.0), ("2\u2135_0", "\u2135_0 \\cdot 2", 1.0),  # unit and count words of other scripts are no prose
]


# A figure named by its points is the same figure read another way (an angle's or a segment's two directions, a
# triangle's corners in any order, a polygon from any corner), never another one; math-verify alone reads
# "m\\angle BAC" as the product m*A*B*C, which "m\\angle ABC" is too.
GEOMETRY = [
    ("\\angle CBA", "\\angle ABC", 1.0), ("m\\angle CBA", "m\\angle ABC", 1.0), ("\u2220CBA", "\\angle ABC", 1.0),
    ("\\overline{BA}", "\\overline{AB}", 1.0), ("\\triangle ACB", "\\triangle ABC", 1.0), ("\u25b3CAB", "\\triangle ABC", 1.0),
    ("\\square DABC", "\\square ABCD", 1.0), ("\\square DCBA", "\\square ABCD", 1.0),
    ("m\\angle BAC", "m\\angle ABC", 0.0), ("\\angle BAC", "\\angle ABC", 0.0), ("m\u2220BAC", "m\\angle ABC", 0.0),
    ("\\overline{AC}", "\\overline{AB}", 0.0), ("\\square ACBD", "\\square ABCD", 0.0), ("30", "\\angle ABC", 0.0),
    ("m\\angle ABC = 30", "30", 1.0), ("m\u2220ABC = 30", "30", 1.0),  # the figure named, its value given
    ("30", "m\\angle ABC = 30", 1.0), ("31", "m\\angle ABC = 30", 0.0),  # the value alone, for a truth that names both
    ("\\angle DEF = \\angle ABC", "\\angle ABC = \\angle DEF", 1.0), ("\\angle A B C", "\\angle ABC", 1.0),
    ("\\angle ABC'", "\\angle ABC", 0.0), ("m\\angle ABC' = 30", "m\\angle ABC = 30", 0.0),  # a primed point is another
    ("\\triangle ABC \\sim \\triangle DEF", "\\triangle ABC \\sim \\triangle DEF", 1.0),  # a similarity pairs the corners
    ("\\triangle ABC \\sim \\triangle DFE", "\\triangle ABC \\sim \\triangle DEF", 0.0),
    ("\\triangle ABC \\cong \\triangle EDF", "\\triangle ABC \\cong \\triangle DEF", 0.0),
]


def rows(category, table, extra=None):
    """Uniform (category, answer, truth, extra_info, expected) rows from a category's table."""
    return [(category, row[0], row[1], extra if extra is not None else (row[2] if len(row) == 4 else {}), row[-1])
            for row in table]


CASES = [
    *rows("numbers", NUMBERS), *rows("latex", LATEX), *rows("units", UNITS), *rows("precision", PRECISION),
    *rows("choices", MULTIPLE_CHOICE, CHOICES), *rows("text", TEXT),
    *rows("sets-intervals-equations", SETS_INTERVALS_EQUATIONS), *rows("hedging", HEDGING),
    *rows("relations", RELATIONS), *rows("other-scripts", OTHER_SCRIPTS), *rows("geometry", GEOMETRY),
]


@pytest.mark.parametrize("category,answer,truth,extra,expected", CASES,
                         ids=[f"{c[0]}:{c[1][:24]}->{c[2][:16]}" for c in CASES])
def test_case_table(category, answer, truth, extra, expected):
    check(answer, truth, extra, expected)


@pytest.mark.parametrize("response,expected", [
    ("<think>1 + 2 = 3</think> <answer>3</answer> <answer>4</answer>", 0.0),
    ("<think>1 + 2 = 3</think> \\boxed{3} \\boxed{4}", 0.0),
    ("<think>the answer is <answer>3</answer></think>", 0.0),  # only inside thinking
    ("The answer is 3.", 0.0),  # no tag, no box
    ("\\boxed{3}", 1.0),
    # one value written twice is one answer; two values, or more final answers than MAX_FINAL_ANSWERS, a hedge
    ("\\boxed{3} so \\boxed{3.0}", 1.0), ("<answer>3</answer> <answer>3 cubes</answer>", 1.0),
    ("<answer>\\boxed{\\frac{6}{2}} = \\boxed{3}</answer>", 1.0), ("\\boxed{3} so \\boxed{3.0} or \\boxed{4}", 0.0),
    ("\\boxed{3} \\boxed{3.0} \\boxed{3.00} \\boxed{03} \\boxed{+3}", 0.0), ("\\boxed{4} so \\boxed{3}", 0.0),
    ("\\boxed{3 cubes} \\boxed{3 spheres}", 0.0),  # a hedge on what is counted
    ("<answer>\\boxed{3}</answer>", 1.0),
    # reasoning opened by the prompt (R1-style templates): a "</think>" alone ends it, drafts before it do not count
    ("Try \\boxed{4}. Wait, wrong.\n</think>\nSo \\boxed{3}", 1.0), ("Try \\boxed{3}. Wait.\n</think>\nIt is \\boxed{4}", 0.0),
    ("Maybe \\boxed{3}.\n</think>\nThe answer is 4.", 0.0),
])
def test_response_level_rules(response, expected):
    assert math_reward(response, "3", extra_info={}) == expected


@pytest.mark.parametrize("response,truth,extra,expected", [
    ("\\boxed{1.6} so \\boxed{2.4}", "2", {"precision": 0}, 0.0),  # two values, each within the precision: a hedge
    ("\\boxed{3.1} \\boxed{3.14}", "3.14", {"precision": 1}, 0.0),
    ("\\boxed{3.14} \\boxed{3.140}", "3.14159", {"precision": 2}, 1.0),  # one value twice
    ("\\boxed{C} \\boxed{3}", "C", CHOICES, 1.0), ("\\boxed{C} \\boxed{2}", "C", CHOICES, 0.0),
])
def test_several_final_answers_are_one_answer_only_when_they_are_one_value(response, truth, extra, expected):
    assert math_reward(response, truth, extra_info=extra) == expected


@pytest.mark.parametrize("response,truth,extra", [
    ("\\boxed{4 \\text{ or } \\boxed{3}}", "3", {}), ("<answer>\\boxed{\\text{not } \\boxed{3}}</answer>", "3", {}),
    ("\\boxed{-\\boxed{3}}", "3", {}), ("\\boxed{10\\boxed{3}}", "3", {}), ("\\boxed{\\boxed{3}^2}", "3", {}),
    ("\\boxed{\\boxed{3} + \\boxed{3}}", "3", {}), ("\\boxed{\\sqrt{\\boxed{9}}}", "9", {}), ("\\boxed{\\frac{\\boxed{1}}{2}}", "1", {}),
    ("\\boxed{B or \\boxed{C}}", "C", CHOICES), ("\\boxed{\\text{not } \\fbox{C}}", "C", CHOICES),
    ("\\boxed{4\\boxed{}}\\boxed{3}", "3", {}),  # an empty inner box hides no earlier answer
    ("\\boxed{n!}", "n", {}), ("\\boxed{x!} \\boxed{x}", "x", {}),  # a factorial of a variable
])
def test_a_box_inside_a_box_is_read_as_part_of_its_answer(response, truth, extra):
    assert math_reward(response, truth, extra_info=extra) == 0.0


def test_a_box_wholly_boxed_again_is_one_answer_and_one_holding_others_a_hedge():
    assert math_reward("\\boxed{\\boxed{3}}", "3", extra_info={}) == 1.0
    assert math_reward("\\boxed{-\\boxed{3}}", "-3", extra_info={}) == 0.0  # "-3" or "3"?
    assert math_reward("\\boxed{5\\boxed{0}}", "0", extra_info={}) == 0.0  # math-verify reads "5{0}" as 0
    assert math_reward("\\boxed{C!}", "C", extra_info=CHOICES) == 1.0  # an option, exclaimed


def test_with_choices_several_answers_are_compared_without_sympy():
    slow = {"choices": ["(x+1)^{999}", "(x+2)^{998}", "(x+3)^{997}", "(x+4)^{996}"]}
    started = time.perf_counter()
    assert math_reward("\\boxed{x+1}\\boxed{x+2}\\boxed{x+3}\\boxed{A}", "A", extra_info=slow) == 0.0
    assert math_reward("\\boxed{(x+1)^{1000}} \\boxed{C}", "C", extra_info=slow) == 0.0
    assert time.perf_counter() - started < 2  # 3.3 s and a TimeoutError through math-verify


@pytest.mark.parametrize("response,truth,extra,expected", [
    ("<answer>3</answer> <answer>**3**</answer>", "3", {}, 1.0),  # a chat model's wrapping is no other answer
    ("<answer>3</answer> <answer>The answer is 3</answer>", "3", {}, 1.0),
    ("<answer>red</answer> <answer>**red**</answer>", "red", {}, 1.0),
    ("<answer>C</answer> <answer>**C**</answer>", "C", CHOICES, 1.0), ("<answer>3</answer> <answer>**C**</answer>", "C", CHOICES, 1.0),
    ("<answer>1024</answer> <answer>**2^{10}**</answer>", "2^{10}", {}, 0.0),  # not plainly one value: a hedge, not an error
    ("<answer>3628800</answer> <answer>\\log 2</answer>", "\\log 2", {}, 0.0),  # ... decided without sympy
    ("\\boxed{5 pears} \\boxed{5}", "5 apples", {}, 0.0),  # each must be right
    ("\\boxed{5 degrees} \\boxed{5 radians}", "5", {}, 0.0), ("\\boxed{5\\%} \\boxed{5}", "5", {}, 0.0),
])
def test_several_final_answers_are_told_apart_cheaply_and_never_raise(response, truth, extra, expected):
    started = time.perf_counter()
    assert math_reward(response, truth, extra_info=extra) == expected
    assert time.perf_counter() - started < 2  # a comparison through sympy would take its 3 s timeout


@pytest.mark.parametrize("response", [
    "\\boxed{C}\\boxed{(C)}\\boxed{C.}\\boxed{C" + "\\," * 300_000 + "}",  # 148 s when the long one was compared
    "\\boxed{C" + "\\," * 50_000 + "}",
    "\\boxed{" + "3," * 300_000 + "3}",
])
def test_a_final_answer_of_a_megabyte_is_wrong_at_once(response):
    started = time.perf_counter()
    assert math_reward(response, "C", extra_info=CHOICES) == 0.0
    assert time.perf_counter() - started < 2  # seconds to minutes when read


def test_a_count_in_the_options_names_its_option_and_no_unit_is_a_count():
    units = {"choices": ["5 cm", "5 furlongs", "7 cm", "8 cm"]}
    assert math_reward("\\boxed{A}", "5 centimeters", extra_info=units) == 1.0  # the truth names A only
    assert math_reward("\\boxed{5 centimeters}", "A", extra_info=units) == 1.0
    assert math_reward("\\boxed{5 acres}", "A", extra_info={"choices": ["5 cm", "6 cm", "7 cm", "8 cm"]}) == 0.0
    counts = {"choices": ["2 cubes", "3 cubes", "4 cubes"]}
    assert math_reward("\\boxed{3}", "B", extra_info=counts) == 1.0
    assert math_reward("\\boxed{3 spheres}", "B", extra_info=counts) == 0.0


def test_toy_world_responses():
    response = ("<think>Row 1: red circle, empty, blue square. Row 2: empty, red circle, empty. "
                "Red circles: 1 + 2 = 3.</think> <answer>3</answer>")
    assert math_reward(response, "3", extra_info={}) == 1.0
    assert math_reward(response, "2", extra_info={}) == 0.0
    choice = "<think>Counting the red shapes gives 3, which is option C.</think> <answer>C</answer>"
    assert math_reward(choice, "C", extra_info={"choices": ["2", "4", "3", "5"]}) == 1.0
    assert math_reward(choice, "A", extra_info={"choices": ["2", "4", "3", "5"]}) == 0.0


def test_ground_truth_written_like_a_response():
    assert math_reward(tagged("7"), "\\boxed{7}", extra_info={}) == 1.0
    assert math_reward(tagged("7"), "<answer>7</answer>", extra_info={}) == 1.0


@pytest.mark.parametrize("answer, truth, expected", [
    ("red, blue", "A", 1.0), ("A. red, blue", "A", 1.0), ("(A) red, blue", "A", 1.0), ("A red, blue", "A", 1.0),
    ("red", "A", 0.0), ("red, green", "A", 0.0), ("B. red, blue", "A", 0.0), ("red, blue", "B", 0.0), ("red", "B", 1.0),
])
def test_an_option_text_with_a_comma_names_that_option_not_two(answer, truth, expected):
    """ "red, blue" is one option's text here, not "red" or "blue" (which would name options B and C)."""
    choices = {"choices": ["red, blue", "red", "blue", "green"]}
    assert math_reward(tagged(answer), truth, extra_info=choices) == expected


def test_choices_may_come_as_a_mapping_or_an_array():
    import numpy as np

    assert math_reward(tagged("2"), "B", extra_info={"choices": {"A": "1", "B": "2"}}) == 1.0  # the option's text
    assert math_reward(tagged("1"), "B", extra_info={"choices": {"A": "1", "B": "2"}}) == 0.0
    assert math_reward(tagged("2"), "B", extra_info={"choices": np.array(["1", "2"])}) == 1.0


@pytest.mark.parametrize("truth,extra,message", [
    ("F", CHOICES, "names 0 of the choices"),
    ("", {}, "is empty"),
    ("\\text{ }", {}, "is empty"),
    ("5^{5^{5^{5}}}", {}, "not checkable: power tower"),
])
def test_a_bad_ground_truth_is_an_error_not_a_zero(truth, extra, message):
    with pytest.raises(ValueError, match=message):
        math_reward(tagged("A"), truth, extra_info=extra)


ADVERSARIAL = [
    "5^{5^{5^{5}}}", "9**9**9**9", "9^9^9", "10^{10^{10}}", "2^{100000}", "100000!", "(3^{4^{5}})!",
    "(" * 5000, "\\frac{" * 5000, "{" * 3000 + "}" * 3000, "\\sqrt{" * 2000,
    "x" * 100_000, "1" * 5000, "\\left(" * 1000, "\\sum_{k=1}^{10^{9}} k^{k}",
    "\\binom{" * 500, "^" * 1000, "\\boxed{" * 1000, "((10^{999})^{999})^{999}",
    "1 " + "m^{2} " * 30 + "=", "1 " + "m \\cdot " * 25 + "=",  # a unit's words, then not a unit: no backtracking
    "10^{99999999+1}", "2^{1 99999999999}", "10^{999*999*999}", "^" * 398,  # arithmetic in an exponent; a caret run
    "(99999999)!", "{99999999}!", "\\binom{1000000000}{500000000}", "\\Gamma(1000000000)",  # factorials of a group
    "10^{10^{3}\\cdot10^{3}\\cdot10^{3}}", "2^{10^{3}\\cdot10^{3}\\cdot10^{3}}",  # powers multiplied in an exponent
    "a" + "!" * 40_000, "4" + ". " * 500_000, "4" + "?" * 500_000,  # punctuation runs: were quadratic (minutes)
    "5 cm^{999999999999}",  # a unit's power: converting it would raise a size to it
    "\\frac{(999^{999})^{999}}{(998^{999})^{999}}", "\\sin((999^{999})^{999})",  # 3-million-digit integers: 75 s
]


def test_reading_digit_groups_is_linear():
    """normalize has no length cap of its own (the math reward caps an answer at 2000 characters first; other
    callers need not). A run of groups whose last is not whole was read again from every group: 86 s for 40,000."""
    groups = "1" + " 000" * 40_000
    started = time.perf_counter()
    assert normalize(groups + " 0") == groups + " 0" and normalize(groups) == groups.replace(" ", "")
    mixed = "1" * 200_000 + " " + "2" * 200_000 + "/3"  # a "mixed number" whose parts int() refuses to read
    assert normalize(mixed) == mixed and normalize("1 2/3 " * 100_000).count("\\frac") == 100_000
    assert time.perf_counter() - started < 2  # ~0.2 s


@pytest.mark.parametrize("truth", ["3", "3 m"])
@pytest.mark.parametrize("answer", ADVERSARIAL, ids=lambda a: a[:16])
def test_adversarial_answers_are_wrong_and_never_hang(answer, truth):
    """Each would take hours or all memory unguarded (10^(10^10) digits, 100000!); guarded, milliseconds.
    The bound is a hang guard, far above that: speed is bench/reward_throughput.py's business."""
    started = time.perf_counter()
    assert math_reward(tagged(answer), truth, extra_info={}) == 0.0
    assert math_reward(tagged(answer), "0.5", extra_info={"precision": 2}) == 0.0  # the rounding path evaluates too
    assert time.perf_counter() - started < 20


def test_powers_of_moderate_exponents_are_still_checked():
    assert math_reward(tagged("2^{900}+3^{900}"), "3^{900}+2^{900}", extra_info={}) == 1.0
    assert math_reward(tagged("(x^{3})^{2}"), "x^{6}", extra_info={}) == 1.0
    polynomial = "+".join(f"x^{{{k}}}" for k in range(10, 1, -1)) + "+x+1"  # exponents side by side: 10! > 10^6
    assert math_reward(tagged(polynomial), polynomial.replace("+x+1", "+1+x"), extra_info={}) == 1.0
    assert unsafe_reason("((10^{999})^{999})^{999}").startswith("powers of powers") and unsafe_reason(polynomial) is None


def test_garbage_from_an_untrained_model_is_wrong():
    """No answer to find, or a malformed one: 0 (its cost per item is measured in bench/reward_throughput.py)."""
    garbage = ["sks aa ptr ##!!" * 40, "<think> 1 2 3 answer", "answer> 3 </answer", "\\boxed 3", ""]
    assert [math_reward(text, "3", extra_info={}) for text in garbage] == [0.0] * len(garbage)


@pytest.mark.parametrize("choices", [["2", "4", "", "5"], ["2", "4", " ", "5"], ["2", "4", "10^{10000}", "5"]])
def test_an_empty_or_unreadable_option_is_named_by_no_answer_and_breaks_no_verdict(choices):
    """Padded or odd option lists: the answer is compared with the options it could name."""
    for answer, expected in (("4.0", 1.0), ("B", 1.0), ("2", 0.0), ("", 0.0)):
        check(answer, "B", {"choices": choices}, expected)
