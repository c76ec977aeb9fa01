"""A ``torch.export`` archive (``.pt2``) read so that the file cannot run code: checked first, then loaded
without unpickling anything.

``torch.export.load`` trusts its file: it unpickles the sample inputs (falling back to ``weights_only=False``),
weights and constants marked ``use_pickle`` and custom objects; it loads AOTInductor's compiled libraries; it
parses the symbolic shapes with ``sympy.sympify`` (an ``eval``); it writes the graph's value names into the
Python source of the module it compiles; and the graph may call any operator, ``aten::from_file`` (a file
mapped into a tensor, writable) included. :func:`check_archive` refuses a file that would need any of that,
naming the member and the reason; :func:`load_exported_module` then rebuilds the program from the JSON graph
and the raw tensor bytes alone, never reading the sample inputs (so no input guards are compiled from the
file either), with every unpickler disabled while it works.

What is accepted: the weights and tensor constants as raw bytes (the form ``torch.export.save`` writes for
ordinary tensors), a graph of ATen and prims operators whose string arguments are options such as
``padding="same"`` (never a file name), the control-flow higher-order operators, Python's arithmetic on sizes,
and shape expressions made of numbers, size symbols and sympy's arithmetic.

Examples
--------
>>> import io, tempfile, torch
>>> model = torch.nn.Linear(3, 2)
>>> path = tempfile.mkdtemp() + "/linear.pt2"
>>> torch.export.save(torch.export.export(model, (torch.ones(2, 3),)), path)
>>> module = load_exported_module(path)
>>> bool(torch.allclose(module(torch.ones(2, 3)), model(torch.ones(2, 3))))
True
"""

import ast
import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple, Union

import torch

from noisegrad.app._unpickling import UnpicklingRefused, no_unpickling, non_tensor_imports

__all__ = ["UnsafeArchive", "check_archive", "load_exported_module", "static_batch_inputs"]

#: The program ``torch.export.load`` returns (it reads ``models/model.json``).
MODEL = "model"

#: String arguments of ATen operators that are options, not data; any other string could name a file.
STRING_OPTIONS = frozenset({"padding", "rounding_mode", "norm", "equation", "indexing", "mode", "pad_mode",
                            "padding_side", "approximate", "UPLO", "driver", "reduce", "activation", "side",
                            "assert_msg", "api_name"})

#: Higher-order operators accepted: control flow over subgraphs that are checked like the main graph.
HIGHER_ORDER = frozenset({"cond", "while_loop", "map_impl", "scan", "associative_scan",
                          "wrap_with_set_grad_enabled", "wrap_with_autocast"})

#: Python operators on sizes the exported graph may call (torch's verifier allows these and a few more).
PYTHON_OPERATORS = frozenset({"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos",
                              "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert",
                              "lshift", "rshift"})

#: Functions a shape expression may call (sympy's ``srepr`` form, as torch writes them).
SYMPY_FUNCTIONS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "floor", "ceiling",
    "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "LessThan",
    "StrictGreaterThan", "GreaterThan", "And", "Or", "Not", "Piecewise", "ExprCondPair", "BooleanTrue",
    "BooleanFalse", "true", "false", "oo", "zoo", "nan", "Half", "One", "Zero", "NegativeOne", "Infinity",
    "NegativeInfinity", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat",
    "Identity",
})
_SIZE_SYMBOL = re.compile(r"[a-z]{1,3}[0-9]+")
_DOTTED_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_PICKLE_HEADER = 0x80


class UnsafeArchive(ValueError):
    """The archive holds something that would run code when loaded; the message names the member and why."""


# --------------------------------------------------------------------------- the check


def check_archive(path: Union[str, Path]) -> None:
    """Refuse an archive that ``torch.export.load`` could not load without running code from it.

    Raises
    ------
    UnsafeArchive
        Naming the first member found that needs pickle, holds compiled code, calls an operator outside the
        accepted set, or carries code in a shape expression or a value name.
    """
    with zipfile.ZipFile(path) as archive:
        root, members = _members(archive)
        names = set(members)
        if "archive_format" not in names:
            raise UnsafeArchive("it is not a torch.export archive of torch 2.8 or later (no archive_format); older "
                                "archives keep their weights as pickles: save it again with torch.export.save")
        aoti = sorted(n for n in names if n.startswith("data/aotinductor/"))
        if aoti:
            raise UnsafeArchive(f"it holds compiled AOTInductor code ({aoti[0]}); loading it would run that code")
        model_json = f"models/{MODEL}.json"
        if model_json not in names:
            raise UnsafeArchive(f"it holds no {model_json}")
        raw = _raw_payloads(archive, root, names)
        for name in sorted(names - raw):
            with archive.open(root + name) as member:
                if member.read(1) == bytes([_PICKLE_HEADER]):
                    raise UnsafeArchive(f"{name} is a pickle (starts with the pickle header 0x80)")
        _check_sample_inputs(archive, root, names)
        _check_program(json.loads(archive.read(root + model_json)), model_json)


def _members(archive: zipfile.ZipFile) -> Tuple[str, Dict[str, zipfile.ZipInfo]]:
    """The archive's root folder (torch puts every member under one) and its members by their path below it."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise UnsafeArchive("its members are not under one root folder, as torch.export.save writes them")
    root = roots.pop() + "/"
    return root, {i.filename[len(root):]: i for i in infos}


def _raw_payloads(archive: zipfile.ZipFile, root: str, names: Set[str]) -> Set[str]:
    """Members holding raw tensor bytes, from the weights and constants configs; refuses what needs pickle."""
    raw = set()
    for folder, kind in (("data/weights", "weights"), ("data/constants", "constants")):
        if f"{folder}/{MODEL}.pt" in names:
            raise UnsafeArchive(f"{folder}/{MODEL}.pt keeps the {kind} in the old pickled form; save the model "
                                "again with torch.export.save of torch 2.8 or later")
        config_name = f"{folder}/{MODEL}_{kind}_config.json"
        if config_name not in names:
            raise UnsafeArchive(f"it holds no {config_name}")
        config = json.loads(archive.read(root + config_name)).get("config", {})
        for fqn, meta in config.items():
            where = f"{config_name} entry {fqn!r}"
            if meta.get("use_pickle"):
                raise UnsafeArchive(f"{where} is stored as a pickle (use_pickle); loading it would unpickle "
                                    f"{folder}/{meta.get('path_name')}")
            path_name = str(meta.get("path_name", ""))
            if kind == "constants" and not path_name.startswith("tensor_"):
                raise UnsafeArchive(f"{where} is a custom or opaque object ({path_name}), which only pickle loads")
            if meta.get("tensor_meta") is None or not re.fullmatch(r"[A-Za-z0-9_]+", path_name):
                raise UnsafeArchive(f"{where} is not a raw tensor")
            raw.add(f"{folder}/{path_name}")
    return raw


def _check_sample_inputs(archive: zipfile.ZipFile, root: str, names: Set[str]) -> None:
    """The sample inputs are never read, but torch would unpickle them: refuse them unless they are only tensors."""
    name = f"data/sample_inputs/{MODEL}.pt"
    if name not in names:
        return
    data = archive.read(root + name)
    try:
        if zipfile.is_zipfile(io.BytesIO(data)):
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                pickles = [inner.read(n) for n in inner.namelist() if n.endswith(".pkl")]
        else:
            pickles = [data]
        extra = [imported for pickled in pickles for imported in non_tensor_imports(pickled)]
    except (ValueError, zipfile.BadZipFile) as err:
        raise UnsafeArchive(f"{name}: {err}") from None
    if extra:
        raise UnsafeArchive(f"{name} (the sample inputs) is a pickle that imports {', '.join(sorted(set(extra)))}, "
                            "not only tensors: torch.export.load would run it")


#: Keys whose strings torch writes into the Python source of the module it compiles: they must be identifiers.
_IDENTIFIER_KEYS = frozenset({"name", "as_name", "user_input_name"})
_IDENTIFIER_LIST_KEYS = frozenset({"forward_arg_names", "field_names"})
_VALUE_TABLES = frozenset({"tensor_values", "sym_int_values", "sym_float_values", "sym_bool_values"})
_ATTRIBUTE_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "fqn"})


def _check_program(program: Dict[str, Any], where: str) -> None:
    """Refuse operators, shape expressions and names that would run code when the program is rebuilt or run."""
    for key, value in _items(program):
        if key in ("target", "as_operator"):  # the schema has "target" only on graph nodes
            _check_operator(str(value), where)
        elif key == "expr_str":
            _check_expression(str(value), where)
        elif key in _IDENTIFIER_KEYS and isinstance(value, str):
            _check_names([value], where)
        elif key in _IDENTIFIER_LIST_KEYS and isinstance(value, list):
            _check_names(value, where)
        elif key in _VALUE_TABLES and isinstance(value, dict):
            _check_names(list(value), where)
        elif key in ("custom_obj_values", "as_custom_obj") and value:
            raise UnsafeArchive(f"{where}: the graph uses custom (TorchBind) objects, which only pickle loads")
        elif key in _ATTRIBUTE_KEYS and isinstance(value, str) and value and not _DOTTED_NAME.fullmatch(value):
            raise UnsafeArchive(f"{where}: the attribute path {value!r} is not a dotted Python name")


def _check_names(names: List[Any], where: str) -> None:
    bad = [name for name in names if not (isinstance(name, str) and name.isidentifier())]
    if bad:
        raise UnsafeArchive(f"{where}: the name {bad[0]!r} is not a Python identifier (torch writes such names "
                            "into the Python source of the module it compiles)")


def _items(node: Any) -> Iterator[Tuple[str, Any]]:
    """Every (key, value) of every object in a JSON document, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _items(value)
    elif isinstance(node, list):
        for value in node:
            yield from _items(value)


def _check_operator(target: str, where: str) -> None:
    parts = target.split(".")
    if not all(p.isidentifier() and not p.startswith("__") for p in parts):
        raise UnsafeArchive(f"{where}: the operator name {target!r} is malformed")
    if len(parts) == 5 and parts[:2] == ["torch", "ops"] and parts[2] in ("aten", "prims"):
        _check_aten(target, parts[2], parts[3], parts[4], where)
        return
    accepted = (
        (len(parts) == 4 and parts[:3] == ["torch", "ops", "higher_order"] and parts[3] in HIGHER_ORDER)
        or (len(parts) == 2 and parts[0] == "_operator" and parts[1] in PYTHON_OPERATORS)
        or (len(parts) == 2 and parts[0] == "math" and callable(getattr(math, parts[1], None)))
        or (len(parts) == 2 and parts[0] == "torch" and re.fullmatch(r"_?sym_[a-z_]+", parts[1]) is not None
            and callable(getattr(torch, parts[1], None)))
    )
    if not accepted:
        raise UnsafeArchive(f"{where}: the graph calls {target}, which is not an ATen or prims operator, a "
                            "control-flow operator or arithmetic on sizes")


def _check_aten(target: str, namespace: str, name: str, overload: str, where: str) -> None:
    try:
        op = getattr(getattr(getattr(torch.ops, namespace), name), overload)
    except (AttributeError, RuntimeError):
        raise UnsafeArchive(f"{where}: the graph calls {target}, which this torch does not have") from None
    if not isinstance(op, torch._ops.OpOverload):
        raise UnsafeArchive(f"{where}: {target} is not an operator")
    for argument in op._schema.arguments:
        if "str" in str(argument.type) and argument.name not in STRING_OPTIONS:
            raise UnsafeArchive(f"{where}: the graph calls {target}, whose string argument '{argument.name}' "
                                "could name a file")


def _check_expression(text: str, where: str) -> None:
    """A shape expression must be numbers, size symbols and sympy's arithmetic: sympify evaluates it as Python."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise UnsafeArchive(f"{where}: the shape expression {text!r} is not an expression") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.Load, ast.operator, ast.unaryop, ast.keyword))
        ok |= isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None)))
        ok |= isinstance(node, (ast.BinOp, ast.UnaryOp))
        ok |= isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SYMPY_FUNCTIONS
        ok |= isinstance(node, ast.Name) and (node.id in SYMPY_FUNCTIONS or _SIZE_SYMBOL.fullmatch(node.id) is not None)
        if isinstance(node, ast.keyword) and not isinstance(node.value, ast.Constant):
            ok = False
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not node.value.isidentifier():
            ok = False
        if not ok:
            raise UnsafeArchive(f"{where}: the shape expression {text!r} is not plain arithmetic "
                                "(torch parses it with sympify, which runs it as Python)")


# --------------------------------------------------------------------------- loading


def load_exported_module(path: Union[str, Path]) -> torch.nn.Module:
    """The exported program in ``path`` as a module, after :func:`check_archive`, without unpickling anything.

    Raises
    ------
    UnsafeArchive
        If the check refuses the file, or anything tried to unpickle while loading it.
    """
    check_archive(path)
    try:
        with no_unpickling(f"loading '{path}'"):
            program = _deserialize(str(path))
            program._guards_code = []  # guards are compiled to Python only with sample inputs; none here anyway
            return program.module()
    except UnpicklingRefused as err:
        raise UnsafeArchive(str(err)) from None


def _deserialize(path: str):
    """torch's own reader for the JSON graph and the raw tensors, with no sample inputs (never unpickled)."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _bytes_to_dataclass
    from torch.export.pt2_archive._package import PT2ArchiveReader, _load_constants, _load_state_dict

    with PT2ArchiveReader(path) as reader:
        program = _bytes_to_dataclass(schema.ExportedProgram, reader.read_bytes(f"models/{MODEL}.json"))
        state_dict = _load_state_dict(reader, MODEL)
        constants = _load_constants(reader, MODEL)
    return ExportedProgramDeserializer().deserialize(program, state_dict, constants, None)


def static_batch_inputs(module: torch.nn.Module) -> List[str]:
    """Names of the exported module's tensor inputs whose first dimension is fixed (not a ``Dim``)."""
    names = []
    for node in module.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(value, torch.Tensor) and value.dim() > 0 and isinstance(value.shape[0], int):
            names.append(str(node.target))
    return names
