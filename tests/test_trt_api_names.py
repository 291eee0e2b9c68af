"""Every ``tensorrt`` name cvexport uses exists in NVIDIA's Python bindings where cvexport uses it.

The name lists in ``tests/data/tensorrt_api/`` are read from the pybind11 sources of
NVIDIA/TensorRT at release tags (10.3.0, 10.9.0, 10.16, 11.0, 11.1). cvexport's uses are
collected two ways:

- statically: an AST walk of the modules that import ``tensorrt`` follows attribute chains on
  the module object (``trt.Logger.WARNING``, ``trt.BuilderFlag``), on objects whose type is
  known from how they were made (``builder.create_builder_config()`` is an IBuilderConfig) or
  from the parameter and attribute names those modules use for them (``config``, ``parser``,
  ``self._engine``, ``state.context``), attribute assignments (which need a setter), and the
  methods of classes derived from a TensorRT class (``IProgressMonitor``). These paths are
  shared by every version, so each name must exist in every list, unless cvexport
  feature-detects it (``hasattr``, ``getattr`` with a default, or the fallback branch of such
  a test): then it must exist in at least one list, or the feature detection is dead code.
- through the version dispatch: the enum members ``plan_builder_settings`` emits for a
  version (builder flags set and cleared, network-creation flags, memory pools, hardware
  compatibility level) must exist in that version's list.

Where real TensorRT is installed, the ``trt``-marked tests check the fake module and cvexport's
shared names against it too.
"""

from __future__ import annotations

import ast
import enum
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes.tensorrt_fake import (
    API_RANGES,
    MODULE_ATTRS,
    FakeTensorRT,
    api_for,
    class_members,
    fake_names,
    load_api,
)

from cvexport.errors import CvexportError
from cvexport.backends.trt.settings import BatchProfile, EngineOptions, plan_builder_settings

ROOT = Path(__file__).resolve().parents[1]
TAGS = tuple(tag for _, tag in API_RANGES)
TAG_VERSIONS = {tag: ".".join(str(n) for n in start) + ".0" for start, tag in API_RANGES}

MODULE = ("module",)
# How cvexport's TensorRT modules name TensorRT objects they receive (parameters, attributes);
# a name assigned from an expression whose type is known must agree (test below).
NAME_TYPES = {"builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition",
              "parser": "OnnxParser", "registry": "IPluginRegistry", "runtime": "Runtime", "engine": "ICudaEngine",
              "context": "IExecutionContext", "cache": "ITimingCache", "logger": "Logger",
              "profile": "IOptimizationProfile"}
ATTR_TYPES = {"trt": MODULE, "_trt": MODULE, "_engine": ("instance", "ICudaEngine"),
              "_runtime": ("instance", "Runtime"), "context": ("instance", "IExecutionContext")}
# What calls return.
HELPER_RETURNS = {"import_tensorrt": MODULE, "trt_logger": ("instance", "Logger")}
FUNCTION_RETURNS = {"get_plugin_registry": "IPluginRegistry"}
METHOD_RETURNS = {
    ("Builder", "create_network"): "INetworkDefinition", ("Builder", "create_builder_config"): "IBuilderConfig",
    ("Builder", "create_optimization_profile"): "IOptimizationProfile",
    ("Builder", "build_serialized_network"): "IHostMemory", ("IBuilderConfig", "create_timing_cache"): "ITimingCache",
    ("Runtime", "deserialize_cuda_engine"): "ICudaEngine",
    ("ICudaEngine", "create_execution_context"): "IExecutionContext",
    ("INetworkDefinition", "get_input"): "ITensor", ("OnnxParser", "get_error"): "ParserError",
}
# enums cvexport indexes with names from the BuilderPlan (checked per version below)
PLAN_ENUMS = {"BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "HardwareCompatibilityLevel"}


@dataclass(frozen=True)
class Use:
    owner: tuple  # MODULE, ("class", C), ("instance", C) or ("enum", E)
    name: str
    kind: str  # "get", "set" (needs a setter), "override" (a method TensorRT calls back)
    optional: bool  # feature-detected by cvexport
    where: str

    def label(self) -> str:
        owner = "tensorrt" if self.owner == MODULE else self.owner[1]
        return f"{owner}.{self.name} ({self.kind}, {self.where})"


# --------------------------------------------------------------------------------------
# Static collection
# --------------------------------------------------------------------------------------
class _Collector:
    def __init__(self, api: dict, path: str):
        self.classes, self.enums, self.path = set(api["classes"]), set(api["enums"]), path
        self.uses: list[Use] = []
        self.dynamic: list[tuple] = []  # getattr(<enum>, <not a constant>)
        self.conflicts: list[str] = []

    # -- types ---------------------------------------------------------------------
    def type_of(self, node, env):
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id == "trt":
                return MODULE
            return ("instance", NAME_TYPES[node.id]) if node.id in NAME_TYPES else None
        if isinstance(node, ast.Attribute):
            owner = self.type_of(node.value, env)
            if owner == MODULE:
                if node.attr in self.classes:
                    return ("class", node.attr)
                if node.attr in self.enums:
                    return ("enum", node.attr)
                return None
            if owner and owner[0] == "class" and f"{owner[1]}.{node.attr}" in self.enums:
                return ("enum", f"{owner[1]}.{node.attr}")
            if owner is None:
                return ATTR_TYPES.get(node.attr)
            return None
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                return HELPER_RETURNS.get(func.id)
            if isinstance(func, ast.Attribute):
                called = self.type_of(func, env)
                if called and called[0] == "class":
                    return ("instance", called[1])  # a constructor
                owner = self.type_of(func.value, env)
                if owner == MODULE and func.attr in FUNCTION_RETURNS:
                    return ("instance", FUNCTION_RETURNS[func.attr])
                if owner and owner[0] == "instance" and (owner[1], func.attr) in METHOD_RETURNS:
                    return ("instance", METHOD_RETURNS[(owner[1], func.attr)])
        return None

    def infer_env(self, body, env):
        """Types of local names assigned in ``body`` (flow-insensitive, to a fixed point)."""
        env = dict(env)
        assigns = [n for n in self.own_nodes(body) if isinstance(n, ast.Assign)]
        seen = set()
        for _ in range(4):
            for node in assigns:
                for target in node.targets:
                    pairs = [(target, node.value)]
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        pairs = list(zip(target.elts, node.value.elts))
                    for name, value in pairs:
                        if isinstance(name, ast.Name):
                            kind = self.type_of(value, env)
                            if kind is not None:
                                conventional = NAME_TYPES.get(name.id)
                                if conventional and kind != ("instance", conventional) and id(node) not in seen:
                                    seen.add(id(node))
                                    self.conflicts.append(f"{self.path}:{node.lineno} {name.id} is {kind}, "
                                                          f"not {conventional}")
                                env[name.id] = kind
        return env

    # -- uses ----------------------------------------------------------------------
    @staticmethod
    def _walk_outside_definitions(body):
        """(node, is_definition) for the nodes of ``body``, not descending into nested
        function and class definitions (those are yielded themselves, flagged)."""
        stack = list(body)
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield node, True
                continue
            yield node, False
            stack.extend(ast.iter_child_nodes(node))

    @classmethod
    def own_nodes(cls, body):
        """Every node in ``body`` outside nested function and class definitions."""
        return (node for node, definition in cls._walk_outside_definitions(body) if not definition)

    def guards(self, body, env):
        found, fallback = set(), set()
        for stmt in body:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2 \
                        and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    is_guard = node.func.id == "hasattr" or (node.func.id == "getattr" and len(node.args) == 3)
                    owner = self.type_of(node.args[0], env)
                    if is_guard and owner is not None:
                        found.add((owner, node.args[1].value))
                if isinstance(node, ast.If) and any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                                                    and n.func.id == "hasattr" for n in ast.walk(node.test)):
                    fallback |= {id(n) for stmt2 in node.orelse for n in ast.walk(stmt2)}
        return found, fallback

    def walk_function(self, node, outer_env, outer_guards):
        body = node.body
        env = self.infer_env(body, outer_env)
        found, fallback = self.guards(body, env)
        guards = outer_guards | found
        self.record(body, env, guards, fallback)
        for child in self.direct_children(body):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.walk_function(child, env, guards)
            elif isinstance(child, ast.ClassDef):
                self.walk_class(child, env, guards)

    def walk_class(self, node, env, guards):
        for base in node.bases:
            kind = self.type_of(base, env)
            if kind and kind[0] == "class":
                optional = (MODULE, kind[1]) in guards
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                        self.uses.append(Use(("instance", kind[1]), item.name, "override", optional,
                                             f"{self.path}:{item.lineno}"))
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.walk_function(item, env, guards)
            elif isinstance(item, ast.ClassDef):
                self.walk_class(item, env, guards)

    @classmethod
    def direct_children(cls, body):
        """Function and class definitions in ``body`` that are not inside another definition."""
        return (node for node, definition in cls._walk_outside_definitions(body) if definition)

    def record(self, body, env, guards, fallback):
        for node in self.own_nodes(body):
            where = f"{self.path}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and not node.attr.startswith("__"):
                owner = self.type_of(node.value, env)
                if owner is not None:
                    kind = "set" if isinstance(node.ctx, ast.Store) else "get"
                    optional = (owner, node.attr) in guards or id(node) in fallback
                    self.uses.append(Use(owner, node.attr, kind, optional, where))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2:
                owner = self.type_of(node.args[0], env)
                if owner is None:
                    continue
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    if not name.value.startswith("__"):
                        optional = node.func.id == "hasattr" or len(node.args) == 3 or id(node) in fallback
                        self.uses.append(Use(owner, name.value, "get", optional, where))
                else:
                    self.dynamic.append((owner, where))


def trt_source_files() -> list[Path]:
    """cvexport's modules that use the tensorrt module: those that import it (directly or through
    import_tensorrt) and those handed it (``trt`` as a name: the builder gets it from the lookup's plan)."""
    uses_trt = re.compile(r"(^|[^.\w])trt\.[A-Za-z_]", re.MULTILINE)
    files = []
    for path in sorted((ROOT / "cvexport").rglob("*.py")):
        text = path.read_text()
        if "import tensorrt" in text or "import_tensorrt()" in text or (
                path.parent.name == "trt" and uses_trt.search(text)):
            files.append(path)
    return files


def collect(sources: dict[str, str], api: dict) -> _Collector:
    collector = None
    for label, text in sources.items():
        part = _Collector(api, label)
        tree = ast.parse(text)
        part.walk_function(tree, {}, frozenset())
        if collector is None:
            collector = part
        else:
            collector.uses += part.uses
            collector.dynamic += part.dynamic
            collector.conflicts += part.conflicts
    return collector


def cvexport_uses() -> _Collector:
    union = {"classes": {}, "enums": {}}
    for tag in TAGS:  # the union of names, so a use of a class any version has is typed
        union["classes"].update(load_api(tag)["classes"])
        union["enums"].update(load_api(tag)["enums"])
    return collect({str(p.relative_to(ROOT)): p.read_text() for p in trt_source_files()}, union)


def exists(api: dict, use: Use) -> bool:
    owner = use.owner
    if owner == MODULE:
        return use.name in MODULE_ATTRS or use.name in api["classes"] or use.name in api["enums"] \
            or use.name in api["functions"] or use.name in api["package_functions"]
    if owner[0] == "enum":
        return use.name in api["enums"].get(owner[1], ())
    if owner[1] not in api["classes"]:
        return False
    if use.kind == "set":
        return use.name in class_members(api, owner[1], "settable")
    nested = {e.split(".", 1)[1] for e in api["enums"] if "." in e
              and e.split(".")[0] in {owner[1], *api.get("bases", {}).get(owner[1], ())}}
    return use.name in class_members(api, owner[1]) or use.name in nested


def problems(uses: list[Use], tags=TAGS) -> list[str]:
    found = []
    for use in sorted(set(uses), key=Use.label):
        missing = [tag for tag in tags if not exists(load_api(tag), use)]
        if use.optional and len(missing) == len(tags):
            found.append(f"{use.label()}: feature-detected, but no TensorRT list has it ({', '.join(tags)})")
        elif not use.optional and missing:
            found.append(f"{use.label()}: missing at {', '.join(missing)}")
    return found


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
def test_tensorrt_is_imported_by_the_trt_backend_only():
    assert [str(p.relative_to(ROOT)) for p in trt_source_files()] == [
        "cvexport/backends/trt/builder.py", "cvexport/backends/trt/environment.py",
        "cvexport/backends/trt/loader.py", "cvexport/backends/trt/runner.py"]


def test_every_static_tensorrt_name_exists_where_it_is_used():
    collected = cvexport_uses()
    assert collected.conflicts == []
    assert problems(collected.uses) == []


def test_the_collector_sees_cvexports_uses():
    """The walk is not vacuous: a sample of what builder.py and trt_runner.py really do."""
    uses = {(u.owner, u.name, u.kind, u.optional) for u in cvexport_uses().uses}
    expected = {
        (MODULE, "init_libnvinfer_plugins", "get", False), (("class", "Logger"), "WARNING", "get", False),
        (("instance", "Builder"), "create_builder_config", "get", False),
        (("instance", "IBuilderConfig"), "set_flag", "get", False),
        (("instance", "IBuilderConfig"), "set_timing_cache", "get", False),
        (("instance", "IBuilderConfig"), "builder_optimization_level", "set", True),
        (("instance", "IBuilderConfig"), "progress_monitor", "set", True),
        (("instance", "IBuilderConfig"), "plugins_to_serialize", "set", True),
        (("instance", "IBuilderConfig"), "DLA_core", "set", False),
        (("instance", "IPluginRegistry"), "get_creator", "get", True),
        (("instance", "IPluginRegistry"), "get_plugin_creator", "get", True),
        (("instance", "OnnxParser"), "num_errors", "get", False),
        (("instance", "INetworkDefinition"), "get_input", "get", False),
        (("instance", "ITensor"), "name", "get", False),
        (("instance", "ITimingCache"), "serialize", "get", False),
        (("instance", "IProgressMonitor"), "phase_start", "override", True),
        (("instance", "IProgressMonitor"), "step_complete", "override", True),
        (("instance", "Runtime"), "engine_host_code_allowed", "set", True),
        (("instance", "Runtime"), "deserialize_cuda_engine", "get", False),
        (("instance", "ICudaEngine"), "get_tensor_mode", "get", False),
        (("instance", "IExecutionContext"), "execute_async_v3", "get", False),
        (("instance", "IExecutionContext"), "set_tensor_address", "get", False),
        (("enum", "TensorIOMode"), "INPUT", "get", False), (("enum", "DeviceType"), "DLA", "get", False),
        (MODULE, "nptype", "get", False),
    }
    assert expected - uses == set()


def test_the_check_fails_for_names_the_bindings_lack():
    source = '''
def build(trt, logger):
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.set_flags(trt.BuilderFlag.FP16)
    config.int8_calibrator = None
    config.num_optimization_profiles = 2
    if hasattr(config, "build_with_magic"):
        config.build_with_magic = True
    registry = trt.get_plugin_registry()
    registry.get_plugin_creator("X", "1", "")
    trt.Logger(trt.Logger.LOUD)
'''
    collected = collect({"snippet.py": source}, load_api("v11.1"))
    found = problems(collected.uses)
    assert found == [
        "BuilderFlag.FP16 (get, snippet.py:5): missing at v11.0, v11.1",
        "IBuilderConfig.build_with_magic (get, snippet.py:8): feature-detected, but no TensorRT list has it "
        "(v10.3.0, v10.9.0, v10.16, v11.0, v11.1)",
        "IBuilderConfig.build_with_magic (set, snippet.py:9): feature-detected, but no TensorRT list has it "
        "(v10.3.0, v10.9.0, v10.16, v11.0, v11.1)",
        "IBuilderConfig.int8_calibrator (set, snippet.py:6): missing at v11.0, v11.1",
        "IBuilderConfig.num_optimization_profiles (set, snippet.py:7): missing at v10.3.0, v10.9.0, v10.16, "
        "v11.0, v11.1",
        "IBuilderConfig.set_flags (get, snippet.py:5): missing at v10.3.0, v10.9.0, v10.16, v11.0, v11.1",
        "IPluginRegistry.get_plugin_creator (get, snippet.py:11): missing at v11.0, v11.1",
        "Logger.LOUD (get, snippet.py:12): missing at v10.3.0, v10.9.0, v10.16, v11.0, v11.1",
    ]
    conflicting = collect({"s.py": "def f(trt, logger):\n    config = trt.Builder(logger)\n"}, load_api("v11.1"))
    assert conflicting.conflicts == ["s.py:2 config is ('instance', 'Builder'), not IBuilderConfig"]


def test_dynamic_enum_lookups_are_the_plans():
    """getattr(trt.<Enum>, name) with a computed name: only the enums the plan check covers."""
    dynamic = {owner for owner, _ in cvexport_uses().dynamic}
    assert dynamic == {("enum", name) for name in PLAN_ENUMS}


def _all_plans(version: str):
    combos = itertools.product(
        ("fp32", "fp16", "int8"), (False, True), (None, 256), ("none", "ampere_plus", "same_compute_capability"),
        (None, 0), (True, False), (False, True), (False, True), ((), ("EfficientNMS_TRT",)))
    for precision, tf32, workspace, hw, dla, fallback, vc, jetson, plugins in combos:
        try:
            options = EngineOptions(precision=precision, allow_tf32=tf32, workspace_mb=workspace,
                                    hardware_compatibility=hw, dla_core=dla, gpu_fallback=fallback,
                                    version_compatible=vc, profile=BatchProfile(1, 1, 1), input_shape=(3, 8, 8))
            yield plan_builder_settings(version, options, is_jetson=jetson, graph_has_qdq=True, plugins=plugins)
        except CvexportError:
            continue


@pytest.mark.parametrize("tag", TAGS)
def test_plan_enum_names_exist_at_their_version(tag):
    api = load_api(tag)
    emitted = {name: set() for name in PLAN_ENUMS}
    for plan in _all_plans(TAG_VERSIONS[tag]):
        emitted["BuilderFlag"] |= set(plan.builder_flags) | set(plan.cleared_flags)
        emitted["NetworkDefinitionCreationFlag"] |= set(plan.network_flags)
        emitted["MemoryPoolType"] |= set(plan.memory_pool_limits)
        if plan.hardware_compatibility_level:
            emitted["HardwareCompatibilityLevel"].add(plan.hardware_compatibility_level)
    missing = {name: sorted(members - set(api["enums"][name])) for name, members in emitted.items()}
    assert missing == {name: [] for name in PLAN_ENUMS}
    # the enumeration reaches the version-specific members (so this test can fail)
    major = int(TAG_VERSIONS[tag].split(".")[0])
    assert {"TF32", "VERSION_COMPATIBLE"} <= emitted["BuilderFlag"]
    assert ({"FP16", "INT8", "GPU_FALLBACK"} <= emitted["BuilderFlag"]) == (major == 10)
    assert emitted["MemoryPoolType"] == {"WORKSPACE"}
    assert "AMPERE_PLUS" in emitted["HardwareCompatibilityLevel"]
    assert ("SAME_COMPUTE_CAPABILITY" in emitted["HardwareCompatibilityLevel"]) == (tag != "v10.3.0")


def test_version_dispatch_would_be_caught_emitting_a_removed_flag():
    api = load_api("v11.0")
    plan = plan_builder_settings("10.16.0", EngineOptions(precision="fp16", input_shape=(3, 8, 8)), is_jetson=False)
    assert "FP16" in plan.builder_flags and "FP16" not in api["enums"]["BuilderFlag"]


@pytest.mark.parametrize("tag", TAGS)
def test_the_fake_has_what_cvexport_uses(tag):
    """So the CPU tests exercise every name cvexport uses at that version, on the fake."""
    version = TAG_VERSIONS[tag]
    fake, api = FakeTensorRT(version), api_for(version)
    names = fake_names(fake)
    lacking = []
    for use in {u for u in cvexport_uses().uses if exists(api, u)}:
        owner = "" if use.owner == MODULE else use.owner[1]
        if owner == "" and use.name in MODULE_ATTRS:
            continue
        if owner not in names and "." in owner:  # a nested enum: reach it through its class
            value = getattr(getattr(fake, owner.split(".")[0], None), owner.split(".")[1], None)
            available = set(value.__members__) if isinstance(value, type) and issubclass(value, enum.Enum) else set()
        else:
            available = names.get(owner, set())
        if use.name not in available:
            lacking.append(use.label())
    assert sorted(set(lacking)) == []


# --------------------------------------------------------------------------------------
# Against real TensorRT (skipped where it is not installed)
# --------------------------------------------------------------------------------------
def _real_tensorrt():
    trt = pytest.importorskip("tensorrt")
    try:
        api_for(trt.__version__)
    except LookupError:
        pytest.skip(f"no name list for TensorRT {trt.__version__}")
    return trt


@pytest.mark.trt
def test_every_name_the_fake_defines_exists_on_real_tensorrt():
    trt = _real_tensorrt()
    fake = FakeTensorRT(trt.__version__)
    lacking = []
    for owner, names in fake_names(fake).items():
        target = trt if owner == "" else getattr(trt, owner, None)
        if target is None:
            lacking.append(f"tensorrt.{owner}")
            continue
        lacking += [f"{owner or 'tensorrt'}.{name}" for name in sorted(names) if not hasattr(target, name)]
    assert lacking == []


@pytest.mark.trt
def test_cvexports_shared_names_exist_on_real_tensorrt():
    trt = _real_tensorrt()
    lacking = []
    for use in cvexport_uses().uses:
        if use.optional or use.kind == "set":
            continue  # feature-detected; setters need an instance
        if use.owner == MODULE:
            target = trt
        else:
            target = getattr(trt, use.owner[1].split(".")[0], None)
            if "." in use.owner[1]:
                target = getattr(target, use.owner[1].split(".")[1], None)
        if target is None or not hasattr(target, use.name):
            lacking.append(use.label())
    assert sorted(set(lacking)) == []
