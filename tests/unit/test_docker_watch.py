"""Pure part of controller.docker_watch, plus the watcher against an unreachable Docker."""

from __future__ import annotations

import queue
from typing import Any

import pytest

from controller.docker_watch import (
    ContainerFacts,
    MalformedInspect,
    MicroserviceWatcher,
    choose_microservices,
    container_id_of,
    facts_from_inspect,
    label_from_env,
    parse_started_at,
)
from controller.events import Event, MicroservicesChanged

ID_A = "a" * 64
ID_B = "b" * 64
ID_C = "c" * 64


def inspect_doc(
    container_id: str,
    *,
    env: list[str] | None,
    started_at: str = "2026-11-28T13:48:53.692450314Z",
    running: bool = True,
    sandbox_key: str = "",
    network_mode: str = "none",
    pid: int = 4242,
    name: str = "/svc",
) -> dict[str, Any]:
    return {
        "Id": container_id,
        "Name": name,
        "State": {"Running": running, "Pid": pid, "StartedAt": started_at},
        "Config": {"Env": env},
        "HostConfig": {"NetworkMode": network_mode},
        "NetworkSettings": {"SandboxKey": sandbox_key or f"/run/docker/netns/{container_id[:12]}"},
    }


def facts(container_id: str, label: str | None, started_at: str, **kw: Any) -> ContainerFacts:
    doc = inspect_doc(
        container_id, env=[f"MICROSERVICE_LABEL={label}"] if label else [], started_at=started_at
    )
    doc["NetworkSettings"].update(kw.pop("settings", {}))
    doc["HostConfig"].update(kw.pop("host_config", {}))
    result = facts_from_inspect(doc)
    assert result is not None
    return result


class TestLabelFromEnv:
    def test_finds_label(self) -> None:
        assert label_from_env(["PATH=/bin", "MICROSERVICE_LABEL=vnf1"]) == "vnf1"

    def test_last_definition_wins(self) -> None:
        assert label_from_env(["MICROSERVICE_LABEL=a", "MICROSERVICE_LABEL=b"]) == "b"

    def test_value_may_contain_equals(self) -> None:
        assert label_from_env(["MICROSERVICE_LABEL=a=b"]) == "a=b"

    @pytest.mark.parametrize(
        "env",
        [
            [],
            ["PATH=/bin"],
            ["MICROSERVICE_LABEL="],
            ["MICROSERVICE_LABEL"],
            ["XMICROSERVICE_LABEL=a"],
        ],
    )
    def test_no_label(self, env: list[str]) -> None:
        assert label_from_env(env) is None


class TestParseStartedAt:
    def test_trimmed_fraction_sorts_numerically(self) -> None:
        shorter = parse_started_at("2026-11-28T13:48:53.6924503Z")
        longer = parse_started_at("2026-11-28T13:48:53.69245031Z")
        assert shorter < longer
        assert "2026-11-28T13:48:53.6924503Z" > "2026-11-28T13:48:53.69245031Z"  # as text: wrong

    def test_exact_value(self) -> None:
        assert parse_started_at("1970-01-01T00:00:01.5Z") == 1_500_000_000

    def test_offset_and_no_fraction(self) -> None:
        assert parse_started_at("1970-01-01T01:00:01+01:00") == 1_000_000_000

    @pytest.mark.parametrize(
        "text", ["", "yesterday", "2026-11-28 13:48:53Z", "2026-11-28T13:48:53"]
    )
    def test_rejects_garbage(self, text: str) -> None:
        with pytest.raises(ValueError):
            parse_started_at(text)


class TestFactsFromInspect:
    def test_running_labelled_container(self) -> None:
        doc = inspect_doc(ID_A, env=["MICROSERVICE_LABEL=vnf1"], pid=77, name="/web")
        result = facts_from_inspect(doc)
        assert result == ContainerFacts(
            container_id=ID_A,
            name="web",
            label="vnf1",
            sandbox_key=f"/run/docker/netns/{ID_A[:12]}",
            network_mode="none",
            pid=77,
            started_at="2026-11-28T13:48:53.692450314Z",
            started_ns=parse_started_at("2026-11-28T13:48:53.692450314Z"),
        )

    def test_stopped_container_is_none(self) -> None:
        assert facts_from_inspect(inspect_doc(ID_A, env=[], running=False)) is None

    def test_null_env_means_no_label(self) -> None:
        result = facts_from_inspect(inspect_doc(ID_A, env=None))
        assert result is not None and result.label is None

    def test_missing_field_names_container_and_field(self) -> None:
        doc = inspect_doc(ID_A, env=[])
        del doc["NetworkSettings"]
        with pytest.raises(MalformedInspect) as caught:
            facts_from_inspect(doc)
        assert caught.value.field == "NetworkSettings.SandboxKey"
        assert ID_A in str(caught.value)

    def test_wrong_type_is_reported(self) -> None:
        doc = inspect_doc(ID_A, env=[])
        doc["State"]["Pid"] = "77"
        with pytest.raises(MalformedInspect, match=r"State\.Pid has type str, expected int"):
            facts_from_inspect(doc)

    def test_bad_start_time_is_reported(self) -> None:
        with pytest.raises(MalformedInspect, match=r"State\.StartedAt"):
            facts_from_inspect(inspect_doc(ID_A, env=[], started_at="soon"))


class TestChooseMicroservices:
    def test_one_per_label(self) -> None:
        running, problems = choose_microservices(
            [
                facts(ID_A, "vnf1", "2026-01-01T00:00:00Z"),
                facts(ID_B, "vnf2", "2026-01-01T00:00:01Z"),
                facts(ID_C, None, "2026-01-01T00:00:02Z"),
            ]
        )
        assert problems == ()
        assert sorted(running) == ["vnf1", "vnf2"]
        assert running["vnf1"].container_id == ID_A
        assert running["vnf1"].sandbox_key == f"/run/docker/netns/{ID_A[:12]}"
        assert running["vnf1"].warnings == ()

    def test_newest_wins_and_warning_names_both(self) -> None:
        running, _ = choose_microservices(
            [
                facts(ID_A, "vnf1", "2026-01-01T00:00:00.9Z"),
                facts(ID_B, "vnf1", "2026-01-01T00:00:00.10000001Z"),
            ]
        )
        winner = running["vnf1"]
        assert winner.container_id == ID_A
        assert winner.warnings == (
            f"microservice vnf1 runs in 2 containers: {ID_A[:12]} (used), {ID_B[:12]} (ignored)",
        )

    def test_same_start_time_is_deterministic(self) -> None:
        pair = [facts(ID_A, "x", "2026-01-01T00:00:00Z"), facts(ID_B, "x", "2026-01-01T00:00:00Z")]
        assert choose_microservices(pair)[0] == choose_microservices(reversed(pair))[0]

    def test_container_network_mode_borrows_provider_sandbox(self) -> None:
        provider = facts(ID_A, None, "2026-01-01T00:00:00Z")
        user = facts(
            ID_B,
            "vnf1",
            "2026-01-01T00:00:01Z",
            settings={"SandboxKey": ""},
            host_config={"NetworkMode": f"container:{ID_A}"},
        )
        running, problems = choose_microservices([user, provider])
        assert problems == ()
        assert running["vnf1"].sandbox_key == provider.sandbox_key
        assert running["vnf1"].container_id == ID_B

    def test_no_namespace_file_is_left_out_with_problem(self) -> None:
        orphan = facts(
            ID_B,
            "vnf1",
            "2026-01-01T00:00:01Z",
            settings={"SandboxKey": ""},
            host_config={"NetworkMode": f"container:{ID_C}"},
        )
        older = facts(ID_A, "vnf1", "2026-01-01T00:00:00Z")
        running, problems = choose_microservices([orphan, older])
        assert running["vnf1"].container_id == ID_A
        assert running["vnf1"].warnings == ()
        assert len(problems) == 1 and ID_B[:12] in problems[0] and "vnf1" in problems[0]


class TestContainerIdOf:
    def test_actor_id(self) -> None:
        assert container_id_of({"Actor": {"ID": ID_A}, "id": ID_B}) == ID_A

    def test_legacy_id(self) -> None:
        assert container_id_of({"id": ID_B}) == ID_B

    def test_nothing(self) -> None:
        assert container_id_of({"Actor": {}}) is None


def test_unreachable_docker_reports_once_and_stops(tmp_path: Any) -> None:
    url = f"unix://{tmp_path}/no-docker.sock"
    posted: queue.Queue[Event] = queue.Queue()
    watcher = MicroserviceWatcher(url, posted.put, backoff_max=0.05)
    watcher.start()
    try:
        event = posted.get(timeout=30)
    finally:
        watcher.stop()
    assert isinstance(event, MicroservicesChanged)
    assert not event.connected
    assert event.running == {}
    assert event.reason.startswith(f"Docker unreachable at {url}: ")
    assert posted.empty(), "a disconnected state must be reported once, not at every retry"


class _RecordingStop:
    """Stands in for the watcher's stop event: records each retry delay, stops after `limit`."""

    def __init__(self, limit: int) -> None:
        self.delays: list[float] = []
        self._limit = limit

    def is_set(self) -> bool:
        return len(self.delays) >= self._limit

    def wait(self, delay: float) -> bool:
        self.delays.append(delay)
        return self.is_set()

    def set(self) -> None:
        self._limit = 0


def test_retries_back_off_exponentially_up_to_the_maximum(tmp_path: Any) -> None:
    posted: list[Event] = []
    watcher = MicroserviceWatcher(f"unix://{tmp_path}/no-docker.sock", posted.append,
                                  backoff_max=1.0)
    stop = _RecordingStop(limit=6)
    watcher._stopping = stop  # type: ignore[assignment]
    watcher._run()
    assert stop.delays == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert len(posted) == 1
