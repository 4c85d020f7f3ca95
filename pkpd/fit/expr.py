"""Safe arithmetic expressions and prior strings of fit specifications.

Individual-parameter models are written the way a NONMEM ``$PK`` block reads::

    CL = "exp(theta1 + theta3*log(WT/70) + theta7*SEX + eta_CL)"
    V  = "theta2*WGT*(1 + theta3*(APGR < 5))*exp(eta_V)"

and priors as distribution calls, ``"Normal(log(65), 1)"``, ``"HalfNormal(3)"``. Both are parsed
with :mod:`ast` (no ``eval``): numbers, names, ``+ - * / **``, comparisons (which give 1.0 or 0.0),
and the functions ``exp, log, sqrt, abs, minimum, maximum, where``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import SpecError

__all__ = ["Expr", "PriorSpec", "parse_expr", "parse_prior", "PRIORS", "prior_from_card"]

FUNCTIONS = ("exp", "log", "sqrt", "abs", "minimum", "maximum", "where")
_ARITY = {"exp": 1, "log": 1, "sqrt": 1, "abs": 1, "minimum": 2, "maximum": 2, "where": 3}
_BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


@dataclass(frozen=True)
class Expr:
    """A parsed expression: its text, the names it uses, and an evaluator for any backend."""

    text: str
    tree: ast.expr = field(repr=False)
    names: frozenset

    def evaluate(self, env: Mapping, ops) -> object:
        """Evaluate with ``env`` (name -> value) and ``ops`` (a module such as ``numpy``,
        ``jax.numpy`` or ``pytensor.tensor``, which supplies exp, log, ... and ``where``)."""
        return _eval(self.tree, env, ops, self.text)


def parse_expr(text: str, where: str) -> Expr:
    """Parse ``text`` (an individual-parameter expression); ``where`` names it in errors."""
    try:
        tree = ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError as e:
        raise SpecError(f"{where}: cannot parse {text!r} ({e.msg}). Fix: write an arithmetic "
                        "expression such as 'TVCL*(WT/70)**0.75*exp(eta_CL)'") from None
    names = set()
    _check(tree, names, text, where)
    return Expr(str(text), tree, frozenset(names))


def _check(node, names, text, where):
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float)) or isinstance(node.value, bool):
            raise SpecError(f"{where}: only numbers are allowed as constants in {text!r}")
    elif isinstance(node, ast.Name):
        names.add(node.id)
    elif isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        _check(node.left, names, text, where)
        _check(node.right, names, text, where)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        _check(node.operand, names, text, where)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP:
        _check(node.left, names, text, where)
        _check(node.comparators[0], names, text, where)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
          and node.func.id in FUNCTIONS and not node.keywords):
        want = _ARITY[node.func.id]
        if len(node.args) != want:
            raise SpecError(f"{where}: {node.func.id}() takes {want} argument(s), got "
                            f"{len(node.args)} in {text!r}")
        for a in node.args:
            _check(a, names, text, where)
    else:
        raise SpecError(f"{where}: {ast.unparse(node)!r} is not allowed in {text!r}. Fix: use "
                        f"numbers, names, + - * / **, comparisons and {', '.join(FUNCTIONS)}")


def _eval(node, env, ops, text):
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise SpecError(f"unknown name {node.id!r} in {text!r}")
        return env[node.id]
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env, ops, text), _eval(node.right, env, ops, text)
        op = _BIN[type(node.op)]
        return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                "/": lambda: a / b, "**": lambda: a ** b}[op]()
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env, ops, text)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Compare):
        a, b = _eval(node.left, env, ops, text), _eval(node.comparators[0], env, ops, text)
        op = _CMP[type(node.ops[0])]
        cond = {"<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b,
                ">=": lambda: a >= b, "==": lambda: ops.eq(a, b) if hasattr(ops, "eq")
                else a == b, "!=": lambda: ops.neq(a, b) if hasattr(ops, "neq")
                else a != b}[op]()
        return ops.where(cond, 1.0, 0.0)
    if isinstance(node, ast.Call):
        args = [_eval(a, env, ops, text) for a in node.args]
        return getattr(ops, node.func.id)(*args)
    raise SpecError(f"cannot evaluate {ast.unparse(node)!r} in {text!r}")


# --------------------------------------------------------------------------------------------
# priors
# --------------------------------------------------------------------------------------------
#: name -> (argument names, support) of the priors a spec may use.
PRIORS: dict[str, tuple[tuple[str, ...], str]] = {
    "Normal": (("mu", "sigma"), "real"),
    "LogNormal": (("mu", "sigma"), "positive"),
    "HalfNormal": (("sigma",), "positive"),
    "HalfCauchy": (("beta",), "positive"),
    "HalfStudentT": (("nu", "sigma"), "positive"),
    "Exponential": (("lam",), "positive"),
    "InvGamma": (("alpha", "beta"), "positive"),
    "Gamma": (("alpha", "beta"), "positive"),
    "Uniform": (("lower", "upper"), "interval"),
    "StudentT": (("nu", "mu", "sigma"), "real"),
    "Flat": ((), "real"),
    "HalfFlat": ((), "positive"),
}
_CONST_FUNCS: dict[str, Callable] = {"log": math.log, "exp": math.exp, "sqrt": math.sqrt}


@dataclass(frozen=True)
class PriorSpec:
    """One prior: a distribution name from :data:`PRIORS` and its arguments."""

    dist: str
    args: tuple[float, ...]
    text: str

    @property
    def support(self) -> str:
        sup = PRIORS[self.dist][1]
        if sup == "interval":
            return "positive" if self.args[0] >= 0 else "real"
        return sup

    def kwargs(self) -> dict:
        return dict(zip(PRIORS[self.dist][0], self.args, strict=True))

    @property
    def pymc_name(self) -> str:
        return {"InvGamma": "InverseGamma"}.get(self.dist, self.dist)

    def pymc(self, name: str, **kw):
        import pymc as pm
        return getattr(pm, self.pymc_name)(name, **self.kwargs(), **kw)

    def sd(self) -> float | None:
        """Rough prior SD (for reporting); None when improper."""
        k = self.kwargs()
        if self.dist == "Normal":
            return k["sigma"]
        if self.dist == "HalfNormal":
            return k["sigma"] * math.sqrt(1 - 2 / math.pi)
        if self.dist == "Exponential":
            return 1 / k["lam"]
        return None


def _const(node, text, where):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_const(node.operand, text, where)
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        a, b = _const(node.left, text, where), _const(node.right, text, where)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b, "**": a ** b}[
            _BIN[type(node.op)]]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in _CONST_FUNCS and len(node.args) == 1):
        return _CONST_FUNCS[node.func.id](_const(node.args[0], text, where))
    raise SpecError(f"{where}: prior argument {ast.unparse(node)!r} in {text!r} is not a number. "
                    "Fix: use numbers, log(), exp(), sqrt() and arithmetic")


def parse_prior(value, where: str) -> PriorSpec:
    """A prior from a string (``"Normal(log(65), 1)"``) or a card-style table
    (``{dist = "lognormal", median = 65, sd_log = 1}``)."""
    if isinstance(value, Mapping):
        return prior_from_card(value, where)
    text = str(value).strip()
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        node = None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise SpecError(f"{where}: prior {text!r} is not a distribution call. Fix: write e.g. "
                        f"'Normal(0, 1)'; known: {', '.join(PRIORS)}")
    dist = node.func.id
    if dist not in PRIORS:
        raise SpecError(f"{where}: unknown prior distribution {dist!r}. Fix: use one of "
                        f"{', '.join(PRIORS)}")
    names = PRIORS[dist][0]
    args = [_const(a, text, where) for a in node.args]
    for kw in node.keywords:
        if kw.arg not in names:
            raise SpecError(f"{where}: {dist} has no argument {kw.arg!r} (it takes "
                            f"{', '.join(names) or 'none'})")
        args_map = dict(zip(names, args, strict=False))
        args_map[kw.arg] = _const(kw.value, text, where)
        args = [args_map.get(n) for n in names]
    if len(args) != len(names) or any(a is None for a in args):
        raise SpecError(f"{where}: {dist} needs {len(names)} argument(s) "
                        f"({', '.join(names) or 'none'}); got {text!r}")
    _check_prior_args(dist, args, text, where)
    return PriorSpec(dist, tuple(args), text)


def _check_prior_args(dist, args, text, where):
    k = dict(zip(PRIORS[dist][0], args, strict=True))
    for name in ("sigma", "beta", "lam", "alpha", "nu"):
        if name in k and not k[name] > 0:
            raise SpecError(f"{where}: {dist} needs {name} > 0; got {text!r}. Fix: give a "
                            f"positive {name} (a scale, rate or shape is > 0)")
    if dist == "Uniform" and not k["upper"] > k["lower"]:
        raise SpecError(f"{where}: Uniform needs upper > lower; got {text!r}. Fix: e.g. "
                        "Uniform(0, 10)")


def prior_from_card(table: Mapping, where: str) -> PriorSpec:
    """Convert a model card's prior table to a :class:`PriorSpec` (``fixed`` is refused)."""
    dist = str(table.get("dist", "")).lower()
    try:
        if dist == "lognormal":
            mu = math.log(float(table["median"])) if "median" in table else float(table["mu"])
            sd = float(table.get("sd_log", table.get("sigma")))
            text = f"LogNormal({mu!r}, {sd!r})"
        elif dist == "normal":
            text = f"Normal({float(table['mean'])!r}, {float(table['sd'])!r})"
        elif dist == "halfnormal":
            text = f"HalfNormal({float(table['sd'])!r})"
        elif dist == "uniform":
            text = f"Uniform({float(table['lower'])!r}, {float(table['upper'])!r})"
        else:
            raise SpecError(f"{where}: the card's prior {dict(table)} cannot be sampled "
                            "(dist must be lognormal, normal, halfnormal or uniform). Fix: give "
                            "a prior in the spec, or keep the parameter fixed")
    except SpecError:
        raise
    except (KeyError, TypeError, ValueError):
        raise SpecError(f"{where}: incomplete card prior {dict(table)}. Fix: lognormal needs "
                        "median and sd_log; normal needs mean and sd") from None
    return parse_prior(text, where)
