"""Kafka's own console producer (`kafka-console-producer`, the class
`org.apache.kafka.tools.ConsoleProducer`), run by the JDK from the broker's jars.

The broker's classpath lacks the `kafka-tools` jar the class lives in, so that one jar, of the
broker's version, is fetched with Maven once, next to the broker's jars in the cache. Its other
dependencies (kafka-clients, jopt-simple, the tools API) are among the broker's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from distcount_config import load_dev
from distcount_devstack._java import checked_java
from distcount_devstack._maven import DEPENDENCY_PLUGIN, KafkaJars

MAIN_CLASS: Final = "org.apache.kafka.tools.ConsoleProducer"


def _fetch_tools_jar(jars: KafkaJars, java: Path, folder: Path) -> None:
    mvn = shutil.which("mvn")
    # never skipped: the broker's jars came from Maven too, so it is on every machine that runs
    # these tests against the local stack, and CI installs it
    assert mvn, "the console producer's jar is fetched with Maven (Debian: apt-get install maven)"
    folder.mkdir(parents=True, exist_ok=True)
    jar = f"kafka-tools-{jars.version}.jar"
    # another session may fetch it at the same time: each copies to a folder of its own and
    # moves the jar into place in one step
    staging = Path(tempfile.mkdtemp(prefix="fetching-", dir=folder))
    try:
        argv = [
            mvn,
            "--batch-mode",
            f"-Dmaven.repo.local={jars.cache_dir / 'm2'}",
            f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact=org.apache.kafka:kafka-tools:{jars.version}",
            "-Dtransitive=false",
            f"-DoutputDirectory={staging}",
        ]
        if jars.repo_url is not None:
            argv.append(f"-DremoteRepositories=central::default::{jars.repo_url}")
        env = {**os.environ, "JAVA_HOME": str(java.resolve().parent.parent)}
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stdout[-4000:]
        os.replace(staging / jar, folder / jar)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def console_producer_argv(bootstrap: str, topic: str, *options: str) -> list[str]:
    """The command line of the console producer writing standard input's lines to `topic`."""
    dev = load_dev({})
    java = checked_java(dev.java_home)
    jars = KafkaJars(dev.cache_dir, dev.kafka_version, dev.maven_repo_url)
    libs = jars.ensure(java, print)
    tools = jars.home / "tools"
    if not (tools / f"kafka-tools-{jars.version}.jar").is_file():
        _fetch_tools_jar(jars, java, tools)
    classpath = f"{libs}/*{os.pathsep}{tools}/*"
    return [
        str(java),
        "-cp",
        classpath,
        MAIN_CLASS,
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        *options,
    ]


async def produce_with_console_producer(
    bootstrap: str, topic: str, lines: bytes, *options: str
) -> None:
    argv = await asyncio.to_thread(console_producer_argv, bootstrap, topic, *options)
    result = await asyncio.to_thread(
        subprocess.run, argv, input=lines, capture_output=True, timeout=120, check=False
    )
    # it says why on standard error, and may still end with 0 when a send failed
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"ERROR" not in result.stderr, result.stderr.decode(errors="replace")
