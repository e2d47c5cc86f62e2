"""Build scripts and launch commands as Fabric's Docker builder runs them. The shell scripts are
executed for real with stand-in `go`, `npm` and start programs, so quoting and branch choice
are what /bin/sh makes of them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

from k8scc import platforms
from k8scc.errors import K8sccError
from k8scc.platforms import FROM_SOURCE, PLATFORMS, lookup

pytestmark = pytest.mark.unit

STATIC = "-ldflags \"-linkmode external -extldflags '-static'\""
STATIC_ARGS = ["-ldflags", "-linkmode external -extldflags '-static'"]

# Records how it was called: working directory, selected environment, then one argument a line.
RECORDER = """#!/bin/sh
{
  printf 'cwd=%s\\n' "$PWD"
  printf 'GO111MODULE=%s\\n' "${GO111MODULE-<unset>}"
  printf 'GOPATH=%s\\n' "${GOPATH-<unset>}"
  for arg in "$@"; do printf 'arg=%s\\n' "$arg"; done
} > "$RECORD"
"""


class Shell:
    """Runs a script with /chaincode/* and other image paths moved below tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.record = root / "record.txt"
        self.input = root / "chaincode" / "input"
        self.output = root / "chaincode" / "output"
        (self.input / "src").mkdir(parents=True)
        self.output.mkdir(parents=True)

    def tool(self, name: str, path: Path | None = None) -> Path:
        program = path or self.bin / name
        program.parent.mkdir(parents=True, exist_ok=True)
        program.write_text(RECORDER)
        program.chmod(0o755)
        return program

    def run(self, script: str, moves: dict[str, Path] | None = None) -> str:
        for old, new in {
            platforms.INPUT_DIR: self.input,
            platforms.OUTPUT_DIR: self.output,
            **(moves or {}),
        }.items():
            script = script.replace(old, str(new))
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "RECORD": str(self.record),
            "GOPATH": "/go",
            "HOME": str(self.root),
        }
        result = subprocess.run(
            ["/bin/sh", "-c", script],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def called(self) -> tuple[str, dict[str, str], list[str]]:
        lines = self.record.read_text().splitlines()
        values = [line.split("=", 1) for line in lines]
        env = {k: v for k, v in values if k in ("GO111MODULE", "GOPATH")}
        cwd = next(v for k, v in values if k == "cwd")
        return cwd, env, [v for k, v in values if k == "arg"]


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    return Shell(tmp_path)


# --- Go -----------------------------------------------------------------------------------------

GO_PATH = "github.com/example/chaincode/cmd"


def _go_layout(shell: Shell, branch: int, path: str) -> None:
    src = shell.input / "src"
    if branch in (1, 2):
        (src / "go.mod").write_text("module x\n")
        if branch == 1:
            (src / "vendor").mkdir()
    if branch in (3, 4):
        package = src / path
        package.mkdir(parents=True)
        (package / "go.mod").write_text("module x\n")
        if branch == 3:
            (package / "vendor").mkdir()


@pytest.mark.parametrize(
    ("branch", "cwd", "mod", "target"),
    [
        (1, "src", "-mod=vendor", GO_PATH),
        (2, "src", "-mod=readonly", GO_PATH),
        (3, f"src/{GO_PATH}", "-mod=vendor", "."),
        (4, f"src/{GO_PATH}", "-mod=readonly", "."),
    ],
)
@pytest.mark.parametrize("cached", [False, True])
def test_go_module_branches(
    shell: Shell, branch: int, cwd: str, mod: str, target: str, cached: bool
) -> None:
    _go_layout(shell, branch, GO_PATH)
    shell.tool("go")
    stdout = shell.run(platforms.golang_build_script(GO_PATH, cached))
    assert stdout.splitlines()[-1] == "Done!"
    called_in, env, args = shell.called()
    assert called_in == str(shell.input / cwd)
    assert env["GO111MODULE"] == "on"
    assert args == ["build", "-v", mod, *STATIC_ARGS, "-o", f"{shell.output}/chaincode", target]


@pytest.mark.parametrize("cached", [False, True])
def test_go_gopath_branch(shell: Shell, cached: bool) -> None:
    shell.tool("go")
    shell.run(platforms.golang_build_script(GO_PATH, cached))
    called_in, env, args = shell.called()
    assert called_in == str(shell.root)
    assert env == {"GO111MODULE": "off", "GOPATH": f"{shell.input}:/go"}
    assert args == ["build", "-v", *STATIC_ARGS, "-o", f"{shell.output}/chaincode", GO_PATH]


def test_go_source_root_module_wins_over_package_module(shell: Shell) -> None:
    _go_layout(shell, 2, GO_PATH)
    _go_layout(shell, 3, GO_PATH)
    shell.tool("go")
    shell.run(platforms.golang_build_script(GO_PATH, False))
    called_in, _, args = shell.called()
    assert called_in == str(shell.input / "src")
    assert "-mod=readonly" in args


def test_go_script_text_follows_fabric() -> None:
    script = platforms.golang_build_script(GO_PATH, False)
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert lines[-1] == "echo Done!"
    conditions = [line for line in lines if line.startswith(("if ", "elif ", "else"))]
    assert conditions == [
        'if [ -f "/chaincode/input/src/go.mod" ] && [ -d "/chaincode/input/src/vendor" ]; then',
        'elif [ -f "/chaincode/input/src/go.mod" ]; then',
        f"elif [ -f /chaincode/input/src/{GO_PATH}/go.mod ] && "
        f"[ -d /chaincode/input/src/{GO_PATH}/vendor ]; then",
        f"elif [ -f /chaincode/input/src/{GO_PATH}/go.mod ]; then",
        "else",
    ]
    builds = [line.strip() for line in lines if "go build" in line]
    assert len(builds) == 5
    for build in builds:
        assert f"{STATIC} -o /chaincode/output/chaincode" in build
    for build in builds[:4]:
        assert build.startswith("GO111MODULE=on go build -v -mod=")
    assert builds[4].startswith("GO111MODULE=off GOPATH=/chaincode/input:$GOPATH go build -v ")


def test_go_module_builds_keep_the_prefix_released_fabric_keeps() -> None:
    """Fabric 2.5.x, 3.0.0 and 3.1.x all run `GO111MODULE=on go build`; only its unreleased
    main dropped the prefix."""
    script = platforms.golang_build_script(GO_PATH, False)
    assert script.count("GO111MODULE=on go build") == 4


@pytest.mark.parametrize(("branch", "verified"), [(1, False), (2, True), (3, False), (4, True)])
def test_go_modules_from_a_cache_are_verified_before_the_build(
    shell: Shell, branch: int, verified: bool
) -> None:
    """A vendored build reads no cached module; a module build first checks the cached ones
    against the hashes recorded when they were downloaded."""
    _go_layout(shell, branch, GO_PATH)
    calls = shell.root / "calls.txt"
    go = shell.bin / "go"
    go.write_text(f'#!/bin/sh\necho "$GO111MODULE $1 $2" >> {calls}\n')
    go.chmod(0o755)
    shell.run(platforms.golang_build_script(GO_PATH, True))
    expected = ["on mod verify"] if verified else []
    assert calls.read_text().splitlines() == [*expected, "on build -v"]
    calls.unlink()
    shell.run(platforms.golang_build_script(GO_PATH, False))
    assert calls.read_text().splitlines() == ["on build -v"]


AWKWARD_PATHS = [
    "example.com/my chaincode",
    "example.com/cc;touch PWNED",
    "example.com/cc$(touch PWNED)",
    "example.com/cc`touch PWNED`",
    "example.com/it's",
    'example.com/"quoted"',
    "example.com/cc && touch PWNED",
    "example.com/cc|touch PWNED",
    "example.com/*",
]


@pytest.mark.parametrize("path", AWKWARD_PATHS)
@pytest.mark.parametrize("branch", [2, 4, 5])
def test_go_path_is_quoted(shell: Shell, path: str, branch: int) -> None:
    _go_layout(shell, branch, path)
    shell.tool("go")
    shell.run(platforms.golang_build_script(path, False))
    called_in, _, args = shell.called()
    if branch == 4:
        assert called_in == str(shell.input / "src" / path)
        assert args[-1] == "."
    else:
        assert args[-1] == path
    assert not list(shell.root.rglob("PWNED"))
    assert not Path("PWNED").exists()


# --- Node and Java ----------------------------------------------------------------------------


def test_node_build_script_follows_fabric() -> None:
    assert platforms.node_build_script("ignored", False) == (
        "set -e\n"
        "if [ -x /chaincode/build.sh ]; then\n"
        "  /chaincode/build.sh\n"
        "else\n"
        "  cp -R /chaincode/input/src/. /chaincode/output && cd /chaincode/output"
        " && npm install --production\n"
        "fi"
    )


def test_node_build_without_image_build_script(shell: Shell) -> None:
    (shell.input / "src" / "package.json").write_text("{}")
    (shell.input / "src" / "lib").mkdir()
    (shell.input / "src" / "lib" / "cc.js").write_text("x")
    shell.tool("npm")
    shell.run(
        platforms.node_build_script("", False),
        {"/chaincode/build.sh": shell.root / "no-build.sh"},
    )
    assert (shell.output / "package.json").is_file()
    assert (shell.output / "lib" / "cc.js").read_text() == "x"
    called_in, _, args = shell.called()
    assert called_in == str(shell.output)
    assert args == ["install", "--production"]


def test_node_build_prefers_the_image_build_script(shell: Shell) -> None:
    build = shell.tool("build.sh", shell.root / "image" / "build.sh")
    shell.run(platforms.node_build_script("", False), {"/chaincode/build.sh": build})
    assert shell.called()[2] == []


def run_java_build(tmp_path: Path, env: dict[str, str]) -> tuple[list[str], Path]:
    """The Java build script in tmp_path, whose build.sh stands in for the image's: it prints
    the options Maven's launchers would add."""
    build = tmp_path / "build.sh"
    build.write_text(
        '#!/bin/sh\necho "config=${MAVEN_CONFIG-unset}"\necho "args=${MAVEN_ARGS-unset}"\n'
    )
    build.chmod(0o755)
    settings = tmp_path / "settings.xml"
    script = platforms.java_build_script("ignored", False)
    result = subprocess.run(
        ["/bin/sh", "-c", script.replace(platforms.MAVEN_SETTINGS, str(settings))],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.splitlines(), settings


def test_java_build_is_the_image_build_script(tmp_path: Path) -> None:
    assert platforms.java_build_script("ignored", False).endswith("\n./build.sh")
    assert PLATFORMS["java"].build_workdir == "/root/chaincode-java"
    printed, settings = run_java_build(tmp_path, {})
    assert printed == ["config=unset", "args=unset"]
    assert not settings.exists()


def test_a_maven_mirror_in_the_environment_reaches_every_maven_launcher(tmp_path: Path) -> None:
    """Maven reads mirrors only from settings; the URL stays in the environment, where Maven's
    own interpolation finds it, so nothing in it is taken for XML or shell."""
    url = "http://mirror.example:8081/maven?a=1&b='2'"
    printed, settings = run_java_build(tmp_path, {"MAVEN_MIRROR_URL": url, "MAVEN_ARGS": "-B"})
    option = f"-gs {settings}"
    assert printed == [f"config={option}", f"args=-B {option}"]
    # The file this test's own script wrote.
    mirror = ElementTree.parse(settings).getroot().find("mirrors/mirror")  # noqa: S314
    assert mirror is not None
    assert mirror.findtext("mirrorOf") == "*"
    assert mirror.findtext("url") == "${env.MAVEN_MIRROR_URL}"


ADDRESS = "peer0.org1.example.com:7052"


def test_golang_launch() -> None:
    assert PLATFORMS["golang"].launch(ADDRESS) == ["chaincode", f"-peer.address={ADDRESS}"]


def test_java_launch() -> None:
    assert PLATFORMS["java"].launch(ADDRESS) == [
        "/root/chaincode-java/start",
        "--peerAddress",
        ADDRESS,
    ]


def test_node_launch_script() -> None:
    argv = PLATFORMS["node"].launch(ADDRESS)
    assert argv[:2] == ["/bin/sh", "-c"]
    assert len(argv) == 3
    script = argv[2]
    assert script.splitlines()[0] == "set -e"
    assert (
        f"if [ -x /chaincode/start.sh ]; then\n  /chaincode/start.sh --peer.address {ADDRESS}\n"
        in script
    )
    assert f"else\n  cd /usr/local/src\n  npm start -- --peer.address {ADDRESS}\nfi" in script


@pytest.mark.parametrize("address", [ADDRESS, "peer0;touch PWNED:7052", "$(touch PWNED):1"])
def test_node_launch_uses_start_sh_when_present(shell: Shell, address: str) -> None:
    start = shell.tool("start.sh", shell.root / "image" / "start.sh")
    shell.run(PLATFORMS["node"].launch(address)[2], {"/chaincode/start.sh": start})
    assert shell.called()[2] == ["--peer.address", address]
    assert not list(shell.root.rglob("PWNED"))


@pytest.mark.parametrize("address", [ADDRESS, "peer0 x;touch PWNED:7052"])
def test_node_launch_falls_back_to_npm_start(shell: Shell, address: str) -> None:
    code = shell.root / "usr-local-src"
    code.mkdir()
    shell.tool("npm")
    shell.run(
        PLATFORMS["node"].launch(address)[2],
        {"/chaincode/start.sh": shell.root / "absent.sh", "/usr/local/src": code},
    )
    called_in, _, args = shell.called()
    assert called_in == str(code)
    assert args == ["start", "--", "--peer.address", address]
    assert not list(shell.root.rglob("PWNED"))


# --- the platform table -------------------------------------------------------------------------


def test_platform_table() -> None:
    assert set(PLATFORMS) == {"golang", "node", "java", "k8s"}
    assert FROM_SOURCE == ("golang", "node", "java")
    assert {name: p.output_dir for name, p in PLATFORMS.items()} == {
        "golang": "/usr/local/bin",
        "node": "/usr/local/src",
        "java": "/root/chaincode-java/chaincode",
        "k8s": "",
    }
    assert PLATFORMS["golang"].build_workdir is None
    assert PLATFORMS["node"].build_workdir is None
    assert dict(PLATFORMS["golang"].default_build_env) == {
        "GOPROXY": "https://proxy.golang.org",
        "GOTOOLCHAIN": "auto",
    }
    assert PLATFORMS["node"].default_build_env == PLATFORMS["java"].default_build_env == ()
    assert {name: p.default_uid for name, p in PLATFORMS.items()} == {
        "golang": 500,
        "node": 1000,
        # fabric-javaenv works only as its own user, root: see its comment.
        "java": None,
        # A prebuilt image's own user, which must not be root.
        "k8s": None,
    }
    assert [name for name, p in PLATFORMS.items() if p.image_user_non_root] == ["k8s"]
    for name, platform in PLATFORMS.items():
        assert platform.name == name


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("golang", "golang"),
        ("GOLANG", "golang"),
        ("Golang", "golang"),
        ("node", "node"),
        ("NODE", "node"),
        ("Java", "java"),
        ("JAVA", "java"),
        (" java\n", "java"),
    ],
)
def test_lookup_is_case_insensitive(kind: str, expected: str) -> None:
    platform = lookup(kind)
    assert platform is not None
    assert platform.name == expected


@pytest.mark.parametrize("kind", ["", "go", "car", "ccaas", "external", "python", "golang2"])
def test_lookup_of_unknown_types(kind: str) -> None:
    assert lookup(kind) is None


def test_harness_reports_failing_scripts(shell: Shell) -> None:
    with pytest.raises(AssertionError):
        shell.run("exit 3")


def test_require_platform_names_the_type_or_the_configuration() -> None:
    assert platforms.require_platform("GOLANG", {"golang"}, "k.yaml").name == "golang"
    with pytest.raises(K8sccError) as unknown:
        platforms.require_platform("ccaas", {"golang"}, "k.yaml")
    assert str(unknown.value) == "type 'ccaas' is not one k8scc builds (golang, node, java, k8s)"
    with pytest.raises(K8sccError) as disabled:
        platforms.require_platform("Node", {"golang"}, "k.yaml")
    assert str(disabled.value) == "platform node is disabled in k.yaml"
