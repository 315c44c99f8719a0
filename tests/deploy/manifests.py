"""Read the deployment files the way Docker, Compose and Kubernetes read them, as far as the tests need.

Only the parts the tests check: a Dockerfile's stages and instructions (with line continuations,
exec and shell forms, ENV variable substitution), Compose's `${VAR:-default}` interpolation, and
`.dockerignore` matching (Docker's rules: the last matching pattern wins, `!` re-includes, and a
pattern that matches a folder matches everything in it).
"""

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
K8S_TRAINING_DIR = K8S_DIR / "training"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, ENV, CMD, ...
    arguments: str  # everything after the keyword, continuations joined


@dataclass
class Stage:
    name: str
    base: str  # an image or an earlier stage's name
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name!r} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comment lines dropped, `\\` continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    return lines


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name (unnamed stages by index), in file order."""
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else str(len(stages))
            stage = stages[name] = Stage(name=name, base=words[0])
        elif stage is not None:
            stage.instructions.append(Instruction(keyword, arguments))
    return stages


def stage_chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, the root first."""
    chain = [stages[name]]
    while chain[0].base in stages:
        chain.insert(0, stages[chain[0].base])
    return chain


def substitute(value: str, env: dict[str, str]) -> str:
    """Docker's `$VAR` and `${VAR}` in ENV values; unknown ones are left for the caller to resolve."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return env.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, value)


def stage_env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    """The ENV a container of this stage starts with (as far as this Dockerfile sets it)."""
    env: dict[str, str] = {}
    for stage in stage_chain(stages, name):
        for instruction in stage.all("ENV"):
            words = shlex.split(instruction.arguments)
            if "=" not in words[0]:  # legacy form: ENV KEY value with spaces
                pairs = [(words[0], " ".join(words[1:]))]
            else:
                pairs = [tuple(word.split("=", 1)) for word in words]
            for key, value in pairs:
                env[key] = substitute(value, env)
    return env


def stage_last(stages: dict[str, Stage], name: str, keyword: str) -> Instruction:
    """The instruction in effect for this stage, inherited from the stages it is built on."""
    for stage in reversed(stage_chain(stages, name)):
        if stage.all(keyword):
            return stage.last(keyword)
    raise AssertionError(f"stage {name!r} and its parents set no {keyword}")


def command(arguments: str) -> list[str]:
    """An exec-form (JSON array) or shell-form command as the argv Docker runs."""
    if arguments.startswith("["):
        return json.loads(arguments)
    return ["/bin/sh", "-c", arguments]


@dataclass
class Healthcheck:
    options: dict[str, str]
    command: list[str]


def parse_healthcheck(arguments: str) -> Healthcheck:
    """`--interval=15s ... CMD [...]` into its options and its command."""
    options: dict[str, str] = {}
    rest = arguments
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        key, _, value = option[2:].partition("=")
        options[key] = value
        rest = rest.lstrip()
    keyword, _, cmd = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK must run a command. Received: {arguments!r}"
    return Healthcheck(options, command(cmd.strip()))


def seconds(duration: str) -> float:
    """A Docker/Compose duration (`90s`, `1m30s`, `500ms`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def compose_healthcheck_command(test: str | list[str]) -> list[str]:
    """Compose's `healthcheck.test` as the argv Docker runs."""
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    kind, *rest = test
    assert kind in ("CMD", "CMD-SHELL"), (
        f"healthcheck test must start with CMD or CMD-SHELL. Received: {test}"
    )
    return rest if kind == "CMD" else ["/bin/sh", "-c", rest[0]]


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # YAML merge keys (<<: *anchor) resolve here


def interpolate(value: object, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR-default}` against `variables`."""

    def replace(match: re.Match) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3)
        if name in variables and (variables[name] or operator != ":-"):
            return variables[name]
        assert operator, f"${{{name}}} has no default and is not set"
        return default

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", replace, str(value))


def compose_environment(service: dict, variables: dict[str, str]) -> dict[str, str]:
    """A service's container environment: variables without a value are passed only when set."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    resolved = {}
    for key, value in environment.items():
        if value is None:
            if key in variables:
                resolved[key] = variables[key]
        else:
            resolved[key] = interpolate(value, variables)
    return resolved


def load_k8s(directory: Path = K8S_DIR) -> dict[str, dict]:
    """Every Kubernetes object that `directory`'s kustomization.yaml applies, by `Kind/name`."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((directory / name).read_text()):
            objects[f"{document['kind']}/{document['metadata']['name']}"] = document
    return objects


def _pattern_regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """(re-include?, pattern) per line, in order."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def ignored(rules: list[tuple[bool, re.Pattern]], path: str) -> bool:
    """Whether Docker leaves `path` (relative, with `/`) out of the build context."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negate, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negate
    return result
