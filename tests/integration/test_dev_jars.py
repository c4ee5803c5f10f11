"""The broker's jars fetched by the real Maven, jar by jar, from a repository of its own: the
Maven cache of an earlier fetch, served as a file:// repository, so nothing leaves the machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distcount_config import load_dev
from distcount_devstack._java import checked_java
from distcount_devstack._maven import KafkaJars
from tests.conftest import Services

pytestmark = [pytest.mark.integration, pytest.mark.devstack]


def test_maven_tells_each_jar_it_fetches(services: Services, tmp_path: Path) -> None:
    dev = load_dev({})
    earlier = dev.cache_dir / "m2"
    if shutil.which("mvn") is None:
        pytest.skip("no mvn on PATH")
    if not (earlier / "org" / "apache" / "kafka" / "kafka_2.13" / dev.kafka_version).is_dir():
        pytest.skip(f"no earlier fetch of Kafka {dev.kafka_version} in {earlier} to fetch from")
    said: list[str] = []
    jars = KafkaJars(tmp_path / "cache", dev.kafka_version, earlier.as_uri())

    libs = jars.ensure(checked_java(dev.java_home), said.append)

    assert f"fetched kafka_2.13-{dev.kafka_version}.jar" in " ".join(said)
    fetched = [line for line in said if line.startswith("fetched ")]
    assert len(fetched) >= len(list(libs.glob("*.jar")))  # the plugin's own jars come too
    assert "Downloaded from central" in jars.maven_log.read_text()
    assert jars.cached
    assert (libs / f"kafka_2.13-{dev.kafka_version}.jar").is_file()
