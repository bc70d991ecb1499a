from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import pytest

from modelship.serve import cli
from modelship.serve.config import ENV_VARS, available_cpus, config_from, cpu_limit, memory_limit, parse_bytes

from .conftest import json_lines, serve_cmd, serve_env


def _tree(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    pc = tmp_path / "proc_self_cgroup"
    pc.write_text(proc)
    return root, pc


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    root, pc = _tree(tmp_path, {"cpu.max": "150000 100000\n"}, "0::/\n")
    assert cpu_limit(root, str(pc)) == 1.5


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    root, pc = _tree(tmp_path, {"cpu.max": "max 100000\n"}, "0::/\n")
    assert cpu_limit(root, str(pc)) is None


def test_cgroup_v2_nested_path_wins(tmp_path: Path) -> None:
    root, pc = _tree(
        tmp_path,
        {"kubepods/pod1/cpu.max": "250000 100000\n", "cpu.max": "max 100000\n"},
        "0::/kubepods/pod1\n",
    )
    assert cpu_limit(root, str(pc)) == 2.5


def test_cgroup_v1_quota_and_unlimited(tmp_path: Path) -> None:
    root, pc = _tree(
        tmp_path,
        {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
        "4:cpu,cpuacct:/\n",
    )
    assert cpu_limit(root, str(pc)) == 0.5
    root2, pc2 = _tree(
        tmp_path / "b", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "3:cpu:/\n"
    )
    assert cpu_limit(root2, str(pc2)) is None


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert cpu_limit(tmp_path / "nothing", str(tmp_path / "missing")) is None
    assert memory_limit(tmp_path / "nothing", str(tmp_path / "missing")) is None


def test_cgroup_v2_memory_limit(tmp_path: Path) -> None:
    root, pc = _tree(tmp_path, {"memory.max": "536870912\n"}, "0::/\n")
    assert memory_limit(root, str(pc)) == 512 * 2**20
    root, pc = _tree(tmp_path / "b", {"memory.max": "max\n"}, "0::/\n")
    assert memory_limit(root, str(pc)) is None
    root, pc = _tree(
        tmp_path / "c", {"kubepods/pod1/memory.max": "1073741824\n", "memory.max": "max\n"}, "0::/kubepods/pod1\n"
    )
    assert memory_limit(root, str(pc)) == 2**30


def test_cgroup_v1_memory_limit_and_unlimited(tmp_path: Path) -> None:
    root, pc = _tree(tmp_path, {"memory/memory.limit_in_bytes": "268435456\n"}, "4:memory:/\n")
    assert memory_limit(root, str(pc)) == 256 * 2**20
    root, pc = _tree(
        tmp_path / "b",
        {"memory/kube/memory.limit_in_bytes": "9223372036854771712\n"},  # v1's "no limit"
        "9:memory:/kube\n0::/\n",
    )
    assert memory_limit(root, str(pc)) is None


def test_byte_counts_take_kubernetes_suffixes() -> None:
    assert [parse_bytes(v) for v in ("1024", "16Mi", "2Gi", "1k", "3M", " 8 Ki ")] == [
        1024, 16 * 2**20, 2 * 2**30, 1000, 3_000_000, 8192,
    ]  # fmt: skip
    for bad in ("", "1.5Gi", "16MB", "-1", "1m"):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    cfg = config_from({"model": "m"}, {"MODELSHIP_MAX_REQUEST_BYTES": "16Mi", "MODELSHIP_MAX_QUEUE": "7"})
    assert (cfg.max_request_bytes, cfg.max_queue) == (16 * 2**20, 7)
    with pytest.raises(ValueError, match="MODELSHIP_MAX_INFLIGHT_BYTES"):
        config_from({"model": "m"}, {"MODELSHIP_MAX_INFLIGHT_BYTES": "lots"})
    with pytest.raises(ValueError, match="never be admitted"):
        config_from({"model": "m", "max_request_bytes": 2**20, "max_inflight_bytes": 2**19}, {})
    with pytest.raises(ValueError, match="metrics port must differ"):
        config_from({"model": "m", "port": 9000, "metrics_port": 9000}, {})


def test_available_cpus_floors_the_quota_and_respects_affinity() -> None:
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(0.25) == 1
    assert available_cpus(1.9) == 1
    assert available_cpus(1000.0) == affinity
    assert available_cpus(None, detect=False) == affinity


def test_config_precedence_flags_env_defaults() -> None:
    env = {"MODELSHIP_MODEL": "/m.tflite", "MODELSHIP_PORT": "9000", "MODELSHIP_MAX_BATCH_SIZE": "16"}
    cfg = config_from({"port": 7000}, env)
    assert (cfg.model, cfg.port, cfg.max_batch_size, cfg.batch_timeout_us) == ("/m.tflite", 7000, 16, 500)
    cfg = config_from({}, env)
    assert cfg.port == 9000


def test_kubernetes_service_link_port_is_ignored() -> None:
    cfg = config_from({"model": "m"}, {"MODELSHIP_PORT": "tcp://10.0.0.1:8080"})
    assert cfg.port == 8080


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="MODELSHIP_MODEL"):
        config_from({}, {})
    with pytest.raises(ValueError, match="MODELSHIP_WORKERS"):
        config_from({"model": "m"}, {"MODELSHIP_WORKERS": "many"})
    with pytest.raises(ValueError, match="batch size"):
        config_from({"model": "m", "max_batch_size": 0}, {})


def test_register_adds_serve_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="modelship")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(
        ["serve", "--model", "m.tflite", "--name", "digits", "--port", "9001", "--workers", "3",
         "--max-batch-size", "32", "--batch-timeout-us", "250", "--max-request-bytes", "2048",
         "--request-timeout-s", "5", "--log-level", "debug", "--host", "127.0.0.1"]
    )  # fmt: skip
    assert args.func is cli.run
    assert (args.model, args.name, args.port, args.workers, args.max_batch_size) == ("m.tflite", "digits", 9001, 3, 32)
    assert (args.batch_timeout_us, args.max_request_bytes, args.request_timeout_s) == (250, 2048, 5.0)
    assert args.log_level == "debug" and args.host == "127.0.0.1"
    assert set(ENV_VARS) >= {"model", "name", "port", "host", "workers", "max_batch_size", "batch_timeout_us"}
    help_text = sub.choices["serve"].format_help()
    for var in ("MODELSHIP_MODEL", "MODELSHIP_MAX_BATCH_SIZE", "MODELSHIP_REQUEST_TIMEOUT_S"):
        assert var in help_text


def test_run_rejects_bad_configuration() -> None:
    ns = argparse.Namespace(**dict.fromkeys(ENV_VARS), func=cli.run)
    ns.model = "m"
    ns.max_batch_size = -1
    assert cli.run(ns) == 2


def test_cli_exits_1_with_a_json_log_when_the_model_cannot_load(tmp_path: Path) -> None:
    proc = subprocess.run(
        serve_cmd("--model", str(tmp_path / "missing.tflite"), "--port", "0", "--host", "127.0.0.1"),
        env=serve_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    logs = json_lines(proc.stderr)
    failure = [entry for entry in logs if entry["msg"] == "model failed to load"]
    assert failure and "does not exist" in str(failure[0]["error"])
