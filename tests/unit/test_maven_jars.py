"""The broker's jars through Maven, with fake `mvn` scripts: Maven is required, its progress is
shown jar by jar, a silent Maven is stopped, and no repository is named unless one is set."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from distcount_devstack import DevStackError
from distcount_devstack._maven import KafkaJars, find_maven

# What Maven prints in batch mode while it fetches, then the jars it copies to the classpath;
# the arguments it was given are kept in argv.txt, each pom it read in poms/.
_FETCHING_MVN = r"""#!/bin/sh
here=$(dirname "$0")
for arg in "$@"; do
    echo "$arg" >> "$here/argv.txt"
    case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}" ;; esac
    case "$arg" in *pom.xml) mkdir -p "$here/poms"; cp "$arg" "$here/poms/$(date +%s%N).xml" ;; esac
done
repo=https://mirror.example/m2
printf '\033[0m[INFO] Scanning for projects...\n'
echo "[INFO] Downloading from central: $repo/org/x/kafka_2.13-9.9.9.pom"
echo "[INFO] Downloaded from central: $repo/org/x/kafka_2.13-9.9.9.pom (24 kB at 1 MB/s)"
echo "[INFO] Downloaded from central: $repo/org/x/kafka_2.13-9.9.9.jar (6.5 MB at 9.1 MB/s)"
echo "[INFO] Downloaded from central: $repo/org/y/slf4j-api-2.0.17.jar (41 kB at 2 MB/s)"
mkdir -p "$out"
touch "$out/kafka_2.13-9.9.9.jar" "$out/slf4j-api-2.0.17.jar" "$out/log4j-core-2.25.1.jar"
echo "[INFO] BUILD SUCCESS"
"""

_SILENT_MVN = """#!/bin/sh
echo "[INFO] Scanning for projects..."
exec sleep 60
"""

_FAILING_MVN = """#!/bin/sh
echo "[INFO] Scanning for projects..."
echo "[ERROR] Failed to execute goal on project kafka-broker-classpath: Could not resolve"
echo "[ERROR] Could not find artifact org.apache.kafka:kafka_2.13:jar:9.9.9"
exit 1
"""


def _on_path(folder: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    mvn = folder / "bin" / "mvn"
    mvn.parent.mkdir(parents=True)
    mvn.write_text(script)
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    # first on PATH, before any real Maven; the shell's tools stay reachable
    monkeypatch.setenv("PATH", os.pathsep.join([str(mvn.parent), os.environ["PATH"]]))
    return mvn.parent


def _fake_java(folder: Path) -> Path:
    """Only its place matters: JAVA_HOME for Maven is the folder above its bin/."""
    java = folder / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    return java


def test_without_maven_the_message_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevStackError) as info:
        find_maven()
    assert "no mvn was found on PATH" in str(info.value)
    assert "apt-get install maven" in str(info.value)


def test_each_jar_maven_fetches_is_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _on_path(tmp_path, monkeypatch, _FETCHING_MVN)
    said: list[str] = []
    jars = KafkaJars(tmp_path / "cache", "9.9.9", None)

    libs = jars.ensure(_fake_java(tmp_path), said.append)

    assert jars.cached
    assert sorted(p.name for p in libs.iterdir())[0] == "kafka_2.13-9.9.9.jar"
    assert "fetched kafka_2.13-9.9.9.jar (6.5 MB)" in said
    assert "fetched slf4j-api-2.0.17.jar (41 kB)" in said
    assert not any(".pom" in line for line in said)  # the poms would drown the jars
    assert "Maven's output in" in said[0]
    assert "BUILD SUCCESS" in jars.maven_log.read_text()
    argv = (bin_dir / "argv.txt").read_text().splitlines()
    assert "--batch-mode" in argv
    assert "--no-transfer-progress" not in argv
    # two passes: the broker, then the log4j binding that matches the slf4j-api Maven picked
    second = sorted((bin_dir / "poms").iterdir())[-1].read_text()
    assert "<artifactId>log4j-slf4j2-impl</artifactId><version>2.25.1</version>" in second


def test_no_repository_is_named_unless_one_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _on_path(tmp_path, monkeypatch, _FETCHING_MVN)
    said: list[str] = []
    KafkaJars(tmp_path / "cache", "9.9.9", None).ensure(_fake_java(tmp_path), said.append)
    poms = [pom.read_text() for pom in (bin_dir / "poms").iterdir()]
    assert poms
    # Maven's own settings decide: its default repository, or a mirror of it
    assert all("<repositor" not in pom and "://" not in pom for pom in poms)
    assert "the repositories of Maven's own settings" in said[0]


def test_a_repository_set_is_the_one_maven_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = _on_path(tmp_path, monkeypatch, _FETCHING_MVN)
    repo = "https://mirror.example/maven2"
    KafkaJars(tmp_path / "cache", "9.9.9", repo).ensure(_fake_java(tmp_path), lambda _: None)
    for pom in (bin_dir / "poms").iterdir():
        text = pom.read_text()
        assert f"<repository><id>central</id><url>{repo}</url></repository>" in text
        assert f"<pluginRepository><id>central</id><url>{repo}</url>" in text


def test_a_silent_maven_is_stopped_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _on_path(tmp_path, monkeypatch, _SILENT_MVN)
    jars = KafkaJars(tmp_path / "cache", "9.9.9", None)
    jars.quiet_timeout_s = 0.5
    started = time.monotonic()

    with pytest.raises(DevStackError) as info:
        jars.ensure(_fake_java(tmp_path), lambda _: None)

    assert time.monotonic() - started < 10  # not the minute it would sleep
    message = str(info.value)
    assert "Maven has printed nothing for" in message
    assert str(jars.maven_log) in message
    assert "DISTCOUNT_DEV_MAVEN_REPO" in message
    assert "~/.m2/settings.xml" in message
    assert "run `distcount dev up` again" in message
    assert not jars.cached


def test_a_maven_that_fails_is_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _on_path(tmp_path, monkeypatch, _FAILING_MVN)
    jars = KafkaJars(tmp_path / "cache", "9.9.9", None)

    with pytest.raises(DevStackError) as info:
        jars.ensure(_fake_java(tmp_path), lambda _: None)

    message = str(info.value)
    assert message.startswith("could not fetch the Apache Kafka 9.9.9 jars from the repositories")
    assert "[ERROR] Could not find artifact org.apache.kafka:kafka_2.13:jar:9.9.9" in message
    assert not jars.cached
