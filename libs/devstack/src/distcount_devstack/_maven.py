"""Assembles the Apache Kafka broker's classpath from Maven Central, once, into the cache.

Maven resolves `org.apache.kafka:kafka_2.13` and its runtime dependencies; a second pass adds a
log4j2 binding matching the slf4j-api Maven picked (without one the broker logs nothing). When
`mvn` is not installed, Maven itself is fetched from the same repository.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape

from distcount_devstack._errors import DevStackError

MAVEN_VERSION: Final = "3.9.9"
DEPENDENCY_PLUGIN: Final = "3.8.1"
DEFAULT_LOG4J: Final = "2.24.3"

_POM: Final = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>distcount.local</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <repositories>
    <repository><id>central</id><url>{repo}</url></repository>
  </repositories>
  <pluginRepositories>
    <pluginRepository><id>central</id><url>{repo}</url></pluginRepository>
  </pluginRepositories>
  <dependencies>
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


class KafkaJars:
    """The jars of one Kafka version under `<cache>/kafka-<version>/libs`."""

    def __init__(self, cache_dir: Path, kafka_version: str, repo_url: str) -> None:
        self.cache_dir = cache_dir
        self.version = kafka_version
        self.repo_url = repo_url
        self.home = cache_dir / f"kafka-{kafka_version}"
        self.libs = self.home / "libs"
        self._marker = self.home / "complete"

    @property
    def cached(self) -> bool:
        return self._marker.is_file() and self.libs.is_dir()

    def ensure(self, java: Path, say: Callable[[str], None]) -> Path:
        if self.cached:
            return self.libs
        say(
            f"fetching Apache Kafka {self.version} and its dependencies from {self.repo_url} "
            "(once; cached in " + str(self.home) + ")"
        )
        self.home.mkdir(parents=True, exist_ok=True)
        mvn = self._maven(say)
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)

        kafka = _dependency("org.apache.kafka", "kafka_2.13", self.version)
        self._resolve(mvn, java, [kafka], staging)
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
        self._resolve(mvn, java, deps, staging)

        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        self._marker.write_text(f"kafka_2.13 {self.version}\n")
        say(f"{len(list(self.libs.glob('*.jar')))} jars in {self.libs}")
        return self.libs

    def _resolve(self, mvn: Path, java: Path, dependencies: list[str], out: Path) -> None:
        pom = self.home / "pom.xml"
        pom.write_text(
            _POM.format(
                repo=escape(self.repo_url),
                dependencies="\n".join(dependencies),
                plugin=DEPENDENCY_PLUGIN,
            )
        )
        env = dict(os.environ)
        env["JAVA_HOME"] = str(java.resolve().parent.parent)
        argv = [
            str(mvn),
            "--batch-mode",
            "--no-transfer-progress",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={self.cache_dir / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={out}",
        ]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=1200, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DevStackError(f"could not run Maven to fetch the Kafka jars: {exc}") from exc
        if result.returncode != 0:
            errors = [ln for ln in result.stdout.splitlines() if ln.startswith("[ERROR]")]
            detail = "\n".join(errors[:6]) or result.stdout[-2000:] or result.stderr[-2000:]
            raise DevStackError(
                f"could not fetch the Apache Kafka {self.version} jars from {self.repo_url}; "
                "check the network, the version (DISTCOUNT_DEV_KAFKA_VERSION) and the "
                f"repository (DISTCOUNT_DEV_MAVEN_REPO). Maven said:\n{detail}"
            )

    def _maven(self, say: Callable[[str], None]) -> Path:
        found = shutil.which("mvn")
        if found is not None:
            return Path(found)
        home = self.cache_dir / f"apache-maven-{MAVEN_VERSION}"
        mvn = home / "bin" / "mvn"
        if mvn.is_file():
            return mvn
        say(f"no mvn on PATH: fetching Apache Maven {MAVEN_VERSION} from {self.repo_url}")
        base = (
            f"{self.repo_url}/org/apache/maven/apache-maven/{MAVEN_VERSION}/"
            f"apache-maven-{MAVEN_VERSION}-bin.tar.gz"
        )
        archive = self.cache_dir / f"apache-maven-{MAVEN_VERSION}-bin.tar.gz"
        try:
            urllib.request.urlretrieve(base, archive)
            with urllib.request.urlopen(base + ".sha512", timeout=60) as resp:
                expected = resp.read().decode().split()[0]
        except OSError as exc:
            raise DevStackError(
                f"no mvn on PATH, and Apache Maven could not be fetched from {base}: {exc}; "
                "install Maven (Debian: apt-get install maven) or check DISTCOUNT_DEV_MAVEN_REPO"
            ) from exc
        actual = hashlib.sha512(archive.read_bytes()).hexdigest()
        if actual != expected:
            archive.unlink()
            raise DevStackError(f"{base} does not match its published SHA-512; not using it")
        with tarfile.open(archive) as tar:
            tar.extractall(self.cache_dir, filter="data")
        archive.unlink()
        return mvn
