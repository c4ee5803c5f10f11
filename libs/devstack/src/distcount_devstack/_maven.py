"""Assembles the Apache Kafka broker's classpath with Maven, once, into the cache.

Maven resolves `org.apache.kafka:kafka_2.13` and its runtime dependencies from the repositories
its own settings name (`~/.m2/settings.xml`: mirrors, proxies and credentials; else its default),
or from DISTCOUNT_DEV_MAVEN_REPO when that is set. A second pass adds a log4j2 binding matching
the slf4j-api Maven picked (without one the broker logs nothing). Each jar is reported as it
arrives, all of Maven's output goes to a log, and a Maven that falls silent is stopped.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO
from xml.sax.saxutils import escape

from distcount_devstack._errors import DevStackError

DEPENDENCY_PLUGIN: Final = "3.8.1"
DEFAULT_LOG4J: Final = "2.24.3"
# Maven prints a line per file it fetches: this long without one, it is stuck on the network
QUIET_TIMEOUT_S: Final = 180.0
# the whole of a first fetch; it takes a minute or two on an ordinary connection
TIMEOUT_S: Final = 1800.0
# while it works, a line at least this often, so that a long fetch never looks hung
_HEARTBEAT_S: Final = 15.0
# each connection and each request of Maven's own, which would otherwise wait up to 30 minutes
_CONNECT_TIMEOUT_MS: Final = 20_000
_REQUEST_TIMEOUT_MS: Final = 60_000

_POM: Final = """<?xml version="1.0" encoding="UTF-8"?>
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>distcount.local</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
{repositories}  <dependencies>
{dependencies}
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{plugin}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""

# Declared under the id of Maven's default repository, which it replaces; a mirror in Maven's
# settings still applies to it, as to the default.
_REPOSITORIES: Final = """  <repositories>
    <repository><id>central</id><url>{repo}</url></repository>
  </repositories>
  <pluginRepositories>
    <pluginRepository><id>central</id><url>{repo}</url></pluginRepository>
  </pluginRepositories>
"""

# "[INFO] Downloaded from central: <url>/kafka_2.13-4.1.1.jar (6.5 MB at 2.1 MB/s)"
_DOWNLOADED_RE: Final = re.compile(r"^(?:\[INFO\] )?Downloaded from [^:]+: (\S+) \(([^)]*)\)")
# even in batch mode, some Maven versions reset the terminal's colours
_ESCAPE_RE: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _dependency(group: str, artifact: str, version: str) -> str:
    return (
        f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version></dependency>"
    )


def _jar_version(libs: Path, artifact: str) -> str | None:
    pattern = re.compile(rf"^{re.escape(artifact)}-(\d[^-]*(?:-[^-]+)?)\.jar$")
    for jar in libs.glob(f"{artifact}-*.jar"):
        match = pattern.match(jar.name)
        if match:
            return match[1]
    return None


def find_maven() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise DevStackError(
            "the Kafka broker's jars are fetched once with Maven, and no mvn was found on PATH: "
            "install Maven (Debian: apt-get install maven; macOS: brew install maven), then run "
            "`distcount dev up` again"
        )
    return Path(found)


class KafkaJars:
    """The jars of one Kafka version under `<cache>/kafka-<version>/libs`."""

    def __init__(self, cache_dir: Path, kafka_version: str, repo_url: str | None) -> None:
        self.cache_dir = cache_dir
        self.version = kafka_version
        self.repo_url = repo_url  # None: the repositories of Maven's own settings
        self.home = cache_dir / f"kafka-{kafka_version}"
        self.libs = self.home / "libs"
        self.maven_log = self.home / "maven.log"
        self.quiet_timeout_s = QUIET_TIMEOUT_S
        self.timeout_s = TIMEOUT_S
        self._marker = self.home / "complete"

    @property
    def cached(self) -> bool:
        return self._marker.is_file() and self.libs.is_dir()

    @property
    def source(self) -> str:
        return self.repo_url or "the repositories of Maven's own settings"

    def ensure(self, java: Path, say: Callable[[str], None]) -> Path:
        if self.cached:
            return self.libs
        mvn = find_maven()
        say(
            f"fetching Apache Kafka {self.version} and its dependencies with Maven from "
            f"{self.source} (once; cached in {self.home}; Maven's output in {self.maven_log})"
        )
        self.home.mkdir(parents=True, exist_ok=True)
        self.maven_log.write_text("")
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)

        kafka = _dependency("org.apache.kafka", "kafka_2.13", self.version)
        self._resolve(mvn, java, [kafka], staging, say)
        slf4j = _jar_version(staging, "slf4j-api") or "2"
        log4j = _jar_version(staging, "log4j-core") or DEFAULT_LOG4J
        binding = "log4j-slf4j2-impl" if not slf4j.startswith("1.") else "log4j-slf4j-impl"
        shutil.rmtree(staging)
        deps = [
            kafka,
            _dependency("org.apache.logging.log4j", "log4j-api", log4j),
            _dependency("org.apache.logging.log4j", "log4j-core", log4j),
            _dependency("org.apache.logging.log4j", binding, log4j),
        ]
        self._resolve(mvn, java, deps, staging, say)

        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        self._marker.write_text(f"kafka_2.13 {self.version}\n")
        say(f"{len(list(self.libs.glob('*.jar')))} jars in {self.libs}")
        return self.libs

    def _resolve(
        self,
        mvn: Path,
        java: Path,
        dependencies: list[str],
        out: Path,
        say: Callable[[str], None],
    ) -> None:
        pom = self.home / "pom.xml"
        repositories = ""
        if self.repo_url is not None:
            repositories = _REPOSITORIES.format(repo=escape(self.repo_url))
        pom.write_text(
            _POM.format(
                repositories=repositories,
                dependencies="\n".join(dependencies),
                plugin=DEPENDENCY_PLUGIN,
            )
        )
        env = dict(os.environ)
        env["JAVA_HOME"] = str(java.resolve().parent.parent)
        argv = [
            str(mvn),
            "--batch-mode",
            "-f",
            str(pom),
            # the jars and Maven's plugins are cached next to the classpath, not in ~/.m2
            f"-Dmaven.repo.local={self.cache_dir / 'm2'}",
            f"-Daether.connector.connectTimeout={_CONNECT_TIMEOUT_MS}",
            f"-Daether.connector.requestTimeout={_REQUEST_TIMEOUT_MS}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={out}",
        ]
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise DevStackError(f"could not run Maven ({mvn}) for the Kafka jars: {exc}") from exc
        with self.maven_log.open("a") as log:
            errors = self._follow(process, log, say)
        if process.returncode != 0:
            detail = "\n".join(errors[:6]) or f"(nothing on [ERROR] lines; see {self.maven_log})"
            raise DevStackError(
                f"could not fetch the Apache Kafka {self.version} jars from {self.source}; "
                "check the network, the version (DISTCOUNT_DEV_KAFKA_VERSION), Maven's settings "
                "(~/.m2/settings.xml) and the repository (DISTCOUNT_DEV_MAVEN_REPO). Maven said:\n"
                f"{detail}"
            )

    def _follow(
        self, process: subprocess.Popen[str], log: TextIO, say: Callable[[str], None]
    ) -> list[str]:
        """Copy Maven's output to `log`, say each jar it fetches, and stop it when it falls
        silent or runs too long; returns its [ERROR] lines."""
        assert process.stdout is not None  # Popen was given stdout=PIPE
        lines: queue.Queue[str | None] = queue.Queue()
        # a queue can be waited on with a timeout, a pipe cannot
        reader = threading.Thread(
            target=_pump, args=(process.stdout, lines), name="maven-output", daemon=True
        )
        reader.start()
        progress = _Progress(say)
        started = heard = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now - heard > self.quiet_timeout_s or now - started > self.timeout_s:
                    raise self._stuck(now - heard, now - started)
                progress.still_working()
                try:
                    line = lines.get(timeout=min(_HEARTBEAT_S, self.quiet_timeout_s))
                except queue.Empty:
                    continue
                if line is None:  # Maven closed its output: it is ending
                    break
                heard = time.monotonic()
                log.write(line)
                progress.read(line)
        except BaseException:
            process.kill()  # stuck, or interrupted: Maven is not left running
            raise
        finally:
            process.wait()
            reader.join(10)
            process.stdout.close()
        return progress.errors

    def _stuck(self, quiet_s: float, running_s: float) -> DevStackError:
        what = (
            f"printed nothing for {quiet_s:.0f} s"
            if quiet_s > self.quiet_timeout_s
            else f"run for {running_s:.0f} s"
        )
        return DevStackError(
            f"Maven has {what} while fetching the Kafka {self.version} jars from {self.source} "
            f"and was stopped; its output is in {self.maven_log}. Check the network and Maven's "
            "settings (~/.m2/settings.xml: proxy, mirror), or set DISTCOUNT_DEV_MAVEN_REPO to a "
            "repository this machine reaches, then run `distcount dev up` again: what was "
            "fetched is kept"
        )


@dataclass
class _Progress:
    """What Maven's output has said so far, and what the user was told of it."""

    say: Callable[[str], None]
    fetched: int = 0
    errors: list[str] = field(default_factory=list)
    told_s: float = field(default_factory=time.monotonic)

    def read(self, line: str) -> None:
        line = _ESCAPE_RE.sub("", line).rstrip()
        if line.startswith("[ERROR]"):
            self.errors.append(line)
        downloaded = _DOWNLOADED_RE.match(line)
        if downloaded is None:
            return
        self.fetched += 1
        name = downloaded[1].rsplit("/", 1)[-1]
        if name.endswith(".jar"):  # the poms, as many again, would drown them
            self._tell(f"fetched {name} ({downloaded[2].split(' at ')[0]})")

    def still_working(self) -> None:
        if time.monotonic() - self.told_s >= _HEARTBEAT_S:
            self._tell(f"Maven is still at work ({self.fetched} files fetched so far)")

    def _tell(self, line: str) -> None:
        self.say(line)
        self.told_s = time.monotonic()


def _pump(stream: Iterable[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)
