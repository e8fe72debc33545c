"""The kwokctl comparison's pure parts (bench/localcluster_kwokctl.py): the configuration that
keeps kwokctl offline and on loopback, the audit policy for its one user, reading listening
sockets from /proc/net/tcp{,6} text, min/median/max and the printed table. No cluster is
started."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
from bench import localcluster_kwokctl as kw
from bench.operator import audit
from e2e.localcluster import build, versions

CACHE = Path("/cache/bin")
TOOLS = build.Toolset(
    etcd=CACHE / "etcd-v3.6.16/etcd",
    kube_apiserver=CACHE / "kubernetes-v1.35.4/kube-apiserver",
    kube_controller_manager=CACHE / "kubernetes-v1.35.4/kube-controller-manager",
    kube_scheduler=CACHE / "kubernetes-v1.35.4/kube-scheduler",
    kubectl=CACHE / "kubernetes-v1.35.4/kubectl",
    kwok=CACHE / "kwok-v0.8.0/kwok",
    kwok_stages=CACHE / "kwok-v0.8.0/kwok-stages.yaml",
    helm=CACHE / "helm-v3.22.0/helm",
    bin_dir=CACHE / "toolset-x",
)


def test_every_binary_kwokctl_could_download_is_a_cached_path() -> None:
    options = kw.kwokctl_config(TOOLS, Path("/w/policy.yaml"), parity=False)["options"]
    binaries = {k: v for k, v in options.items() if k.endswith("Binary")}
    assert binaries == {
        "kubeApiserverBinary": str(TOOLS.kube_apiserver),
        "kubeControllerManagerBinary": str(TOOLS.kube_controller_manager),
        "kubeSchedulerBinary": str(TOOLS.kube_scheduler),
        "kubectlBinary": str(TOOLS.kubectl),
        "etcdBinary": str(TOOLS.etcd),
        "kwokControllerBinary": str(TOOLS.kwok),
    }
    assert options["bindAddress"] == "127.0.0.1"
    assert options["runtime"] == "binary"
    assert options["kubeVersion"] == versions.KUBERNETES_VERSION
    assert options["kubeAuditPolicy"] == "/w/policy.yaml"


def test_parity_adds_each_argument_once_to_its_component_and_defaults_add_none() -> None:
    patched = kw.kwokctl_config(TOOLS, Path("/p"), parity=True)["componentsPatches"]
    by_component = {p["name"]: p["extraArgs"] for p in patched}
    assert by_component == {
        "kube-controller-manager": [{"key": "leader-elect", "value": "false", "override": False}],
        "kube-scheduler": [{"key": "leader-elect", "value": "false", "override": False}],
        "etcd": [{"key": "unsafe-no-fsync", "value": "true", "override": False}],
        # kwokctl passes an empty --node-ip itself: replaced, not added twice.
        "kwok-controller": [{"key": "node-ip", "value": "127.0.0.1", "override": True}],
    }
    assert kw.kwokctl_config(TOOLS, Path("/p"), parity=False)["componentsPatches"] == []


def test_the_audit_policy_is_the_operator_benchmarks_for_kwokctls_user() -> None:
    policy = kw.kwokctl_audit_policy()
    assert 'users: ["kwok-admin"]' in policy
    assert "kubernetes-admin" not in policy
    assert policy.replace("kwok-admin", "kubernetes-admin") == audit.POLICY


TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue ... inode\n"


def _tcp_line(address: str, state: str, inode: int) -> str:
    return (
        f"   0: {address} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000"
        f"     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


def test_listeners_are_read_from_proc_net_tcp_in_host_byte_order() -> None:
    text = (
        TCP_HEADER
        + _tcp_line("0100007F:7FFC", "0A", 11)  # 127.0.0.1:32764, listening
        + _tcp_line("00000000:07E8", "0A", 12)  # 0.0.0.0:2024, listening
        + _tcp_line("0100007F:8D5D", "01", 13)  # established: not a listener
    )
    assert kw.parse_listeners(text) == [("127.0.0.1", 32764, 11), ("0.0.0.0", 2024, 12)]


def test_listeners_are_read_from_proc_net_tcp6() -> None:
    text = (
        TCP_HEADER
        + _tcp_line("00000000000000000000000001000000:0050", "0A", 21)  # [::1]:80
        + _tcp_line("00000000000000000000000000000000:0051", "0A", 22)  # [::]:81
        + _tcp_line("0000000000000000FFFF00000100007F:0052", "0A", 23)  # ::ffff:127.0.0.1
    )
    assert kw.parse_listeners(text) == [
        ("::1", 80, 21),
        ("::", 81, 22),
        # Printed as ::ffff:7f00:1 before Python 3.13.
        (str(ipaddress.ip_address("::ffff:127.0.0.1")), 82, 23),
    ]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.53", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("::ffff:10.0.0.5", False),
    ],
)
def test_only_loopback_addresses_count_as_loopback(address: str, loopback: bool) -> None:
    assert kw.is_loopback(address) is loopback


def test_summary_is_min_median_max_rounded() -> None:
    assert kw.summary([5.04, 11.26, 7.0]) == {"min": 5.0, "median": 7.0, "max": 11.3}
    assert kw.summary([3.0]) == {"min": 3.0, "median": 3.0, "max": 3.0}


def _side(start: float, collateral: list[str], non_loopback: list[str]) -> dict[str, Any]:
    figure = kw.summary([start, start + 1])
    return {
        "start_seconds": figure,
        "create_seconds": kw.summary([start / 2]),
        "restart_seconds": figure,
        "stop_seconds": figure,
        "restart_collateral": collateral,
        "down_after_restart": [],
        "non_loopback": non_loopback,
        "audit_users": ["kubernetes-admin (inferops-localcluster)"],
        "leftovers": [],
    }


def test_the_table_puts_each_sides_figures_in_its_column() -> None:
    result = {
        "runs": 2,
        "kwokctl_parity_patches": False,
        "ours_admin_controllers": True,
        "ours": _side(11.0, [], []),
        "kwokctl": _side(5.0, ["kube-scheduler"], ["0.0.0.0:32764"]),
    }
    lines = kw.table(result).splitlines()
    assert lines[0] == (
        "runs: 2; kwokctl without the arguments that match e2e/localcluster; "
        "ours with --use-service-account-credentials=false"
    )
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in lines[3:]}
    assert rows["start until usable (s)"] == ["11.0 / 11.5 / 12.0", "5.0 / 5.5 / 6.0 |"]
    assert rows["of which the start command (s)"][1] == "2.5 / 2.5 / 2.5 |"
    assert rows["other components that did not survive it"] == ["none", "kube-scheduler |"]
    assert rows["non-loopback listeners"] == ["none", "0.0.0.0:32764 |"]
