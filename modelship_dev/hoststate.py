"""The machine's state that the real node (hack/node) touches, captured so that `hack/node/down` (`make demo-down`)
can be held to "the machine as it was": take a capture before `hack/node/up`, another after `hack/node/down`, and
require them equal. The e2e tier does that around its whole run (tests/e2e/conftest.py); by hand:

    python -m modelship_dev.hoststate capture > /tmp/before.json
    make demo DEMO_ARGS=--keep; ...; make demo-down
    python -m modelship_dev.hoststate compare /tmp/before.json     # exit 1 and the difference, if any

Sections (each a list of lines, compared as multisets: a rule added twice shows twice):
  links      every network interface with its kind, master, admin state and addresses (msnode0, pod veths)
  routes     IPv4/IPv6 routes of every table (the Service range 10.96.0.0/16 into msnode0) and policy rules
  netns      named network namespaces (the CRI's cni-<uuid>)
  iptables   iptables-save / ip6tables-save of every table: chains with their policies and rules, no counters
             (kubelet's and kube-proxy's KUBE-* chains, the FORWARD accept for pods on msnode0, CNI portmap's)
  nftables   `nft list tables`, where nft is installed (native nftables tables, e.g. kube-proxy's nftables mode)
  sysctls    the kernel settings a node changes (hack/node/lib.sh SYSCTLS; ip forwarding, conf.all/default,
             bridge netfilter, conntrack)
  mounts     mounts under the node's directories, /run/netns and container runtimes' dirs
  cgroups    top-level cgroups of every hierarchy and anything under kubepods
  processes  processes the node started: control plane (its kwokctl cluster), kubelet, kube-proxy, containerd and
             its shims, every container (CoreDNS, metrics-server, pause, models, the operator), the registry, an
             operator kept by `make demo DEMO_ARGS="--keep --local-operator"` (KUBECONFIG = the node's)
  files      /run (its own entries, not docker's or other programs' lock/user/systemd dirs), Kubernetes' and
             CNI's and containerd's well-known directories, the control plane's files, and the entries of the node
             cache other than the documented caches (CACHE_ENTRIES)

Docker's own devices, routes and rules (docker0, br-<id>, DOCKER* chains) are left out: the docker engine changes
them whenever a container starts, and the node does not touch them.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LIB_SH = REPO / "hack" / "node" / "lib.sh"

State = dict[str, list[str]]
SECTIONS = ("links", "routes", "netns", "iptables", "nftables", "sysctls", "mounts", "cgroups", "processes", "files")

CACHE_ENTRIES = ("containerd-root", "imported", "pause", "k8s-v*", "addons-*", "buildkit", "logs", "registry", "demo",
                 "e2e-*")  # fmt: skip
"""The node cache's entries hack/node/down keeps on purpose (hack/node/lib.sh): containerd's content store and its
import stamps (warm image imports), the pause image, the kubelet/kube-proxy, add-on and BuildKit builds, logs, the
registry's storage, the demo's models; e2e-* are the e2e tier's work directories (removed by the tier, after down).
Anything else new in $MODELSHIP_CACHE/node is a leftover."""

RUN_FOREIGN = ("docker", "docker.pid", "docker.sock", "modelship-dockerd.pid", "containerd/s", "lock", "user",
               "systemd", "postgresql", "sendsigs.omit.d")  # fmt: skip
"""Entries of /run that belong to other programs and change under them (the docker engine, its containerd's shim
sockets, lock files, login sessions): not compared."""

_DOCKER_LINK = re.compile(r"^(docker0|br-[0-9a-f]{12})$")
_BUILTIN_CHAINS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
_DOCKER_RULE = re.compile(r"\bDOCKER[-A-Z0-9]*\b|\bdocker0\b|\bbr-[0-9a-f]{12}\b")


@dataclass(frozen=True)
class Node:
    """Where the node keeps things: hack/node/lib.sh's settings."""

    run: str = "/run/modelship-node"
    cache: str = "/var/cache/modelship/node"
    data: str = "/var/cache/modelship/node/containerd-root"
    kubelet_root: str = "/var/cache/modelship/node/kubelet"
    modelship_cache: str = "/var/cache/modelship"
    cluster: str = "modelship-node"
    kubeconfig: str = "/var/cache/modelship/kubeconfig-modelship-node"
    sysctls: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_lib(cls) -> Node:
        keys = ("NODE_RUN", "NODE_CACHE", "NODE_DATA", "NODE_KUBELET_ROOT", "MODELSHIP_CACHE", "NODE_CLUSTER",
                "KUBECONFIG_NODE", "SYSCTLS[*]")  # fmt: skip
        out = subprocess.run(
            ["bash", "-c", f"source {LIB_SH} && " + " && ".join(f'echo "${{{k}}}"' for k in keys)],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()  # fmt: skip
        run, cache, data, kubelet_root, mcache, cluster, kubeconfig, sysctls = out
        return cls(run, cache, data, kubelet_root, mcache, cluster, kubeconfig, tuple(sysctls.split()))

    @property
    def control_plane_dirs(self) -> tuple[str, ...]:
        return (
            f"{self.modelship_cache}/kwok/clusters/{self.cluster}",
            f"{self.modelship_cache}/clusters/{self.cluster}",
        )


# ---------------------------------------------------------------------------------------------------- network


def links(ip_addr_json: str) -> list[str]:
    """`ip -j -d addr show` -> "name kind master=... up|down addr/len ..." for every link but docker's."""
    items: list[dict[str, Any]] = json.loads(ip_addr_json or "[]")
    docker = {i["ifname"] for i in items if _DOCKER_LINK.match(i["ifname"])}
    out = []
    for i in items:
        master = i.get("master", "-")
        if i["ifname"] in docker or master in docker:
            continue
        kind = (i.get("linkinfo") or {}).get("info_kind", i.get("link_type", "?"))
        state = "up" if "UP" in i.get("flags", []) else "down"
        addrs = sorted(f"{a['local']}/{a['prefixlen']}" for a in i.get("addr_info", []) if "local" in a)
        out.append(" ".join([i["ifname"], kind, f"master={master}", state, *addrs]))
    return sorted(out)


def routes(route_json: Iterable[str], docker_links: set[str]) -> list[str]:
    """`ip -j route show table all` outputs (IPv4, IPv6) -> one line per route, docker's left out."""
    out = []
    for text in route_json:
        for r in json.loads(text or "[]"):
            if r.get("dev") in docker_links:
                continue
            keys = ("type", "dst", "gateway", "dev", "table", "protocol", "scope", "prefsrc", "metric")
            out.append(" ".join(f"{k}={r[k]}" for k in keys if k in r))
    return sorted(out)


def rules(rule_json: Iterable[str]) -> list[str]:
    out = []
    for text in rule_json:
        for r in json.loads(text or "[]"):
            out.append(" ".join(f"{k}={v}" for k, v in sorted(r.items())))
    return sorted(out)


def iptables(save_output: str, family: str) -> list[str]:
    """iptables-save text -> "family table :CHAIN POLICY" and "family table -A ..." lines, without counters,
    without docker's chains and rules, and without built-in chains at policy ACCEPT (a DROP policy is kept)."""
    out, table = [], ""
    for line in save_output.splitlines():
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = line[1:]
            continue
        if _DOCKER_RULE.search(line):
            continue
        if line.startswith(":"):
            line = line.rsplit(" [", 1)[0]  # the counters
            if line.split()[0][1:] in _BUILTIN_CHAINS and line.endswith(" ACCEPT"):
                continue  # a built-in chain at its default policy: filters nothing, present or not (nf_tables
                # registers a table's built-in chains on its first use and keeps them)
        out.append(f"{family} {table} {line}")
    return sorted(out)


# ---------------------------------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    cmdline: str
    cgroup: str = ""
    environ: tuple[str, ...] = ()


def read_procs(proc: Path = Path("/proc")) -> dict[int, Proc]:
    procs = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            cgroup = (d / "cgroup").read_text()
            try:
                environ = tuple((d / "environ").read_bytes().decode(errors="replace").split("\0"))
            except OSError:
                environ = ()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        procs[int(d.name)] = Proc(int(d.name), ppid, comm, cmdline, cgroup, environ)
    return procs


def processes(procs: Mapping[int, Proc], markers: Iterable[str], environ: Iterable[str] = (),
              me: int | None = None) -> list[str]:  # fmt: skip
    """The processes a node started: those whose command line names one of ``markers`` (the node's paths), whose
    environment holds one of ``environ``, or that live in a kubepods cgroup, with all their descendants; not
    ``me`` (this process), its ancestors or its own children. -> "comm: command line" lines (no pids)."""
    markers, environ = tuple(markers), set(environ)
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)

    def subtree(pid: int) -> set[int]:
        seen, todo = set(), [pid]
        while todo:
            q = todo.pop()
            if q not in seen:
                seen.add(q)
                todo.extend(children.get(q, []))
        return seen

    mine: set[int] = set()
    if me is not None:
        mine = subtree(me)
        q = procs[me].ppid if me in procs else 0
        while q in procs and q not in mine:
            mine.add(q)
            q = procs[q].ppid
    roots = [
        p.pid for p in procs.values()
        if any(m in p.cmdline for m in markers) or "kubepods" in p.cgroup or environ.intersection(p.environ)
    ]  # fmt: skip
    node: set[int] = set()
    for r in roots:
        node |= subtree(r)
    return sorted(f"{procs[p].comm}: {procs[p].cmdline[:300]}" for p in node - mine)


# ---------------------------------------------------------------------------------------------------- files


def tree(root: Path, skip: Iterable[str] = (), limit: int = 20000) -> list[str]:
    """Every entry under ``root`` (not following links, not descending into mount points) as "root/rel type",
    without the relative paths in ``skip`` (and what is under them); capped at ``limit`` entries (a note says so)."""
    if not root.exists() and not root.is_symlink():
        return []
    skip = tuple(skip)
    out = [f"{root} {_kind(root)}"]
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames) + sorted(filenames):
            r = os.path.normpath(os.path.join(rel, name))
            if any(r == s or r.startswith(s + "/") for s in skip):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            path = Path(dirpath, name)
            if name in dirnames and os.path.ismount(path):
                dirnames.remove(name)  # another file system (a container's rootfs, a netns file): "mounts" has it
            out.append(f"{root}/{r} {_kind(path)}")
            if len(out) >= limit:
                return [*out, f"{root}: more than {limit} entries"]
    return out


def _kind(p: Path) -> str:
    if p.is_symlink():
        return f"-> {os.readlink(p)}"
    return "dir" if p.is_dir() else "socket" if p.is_socket() else "file"


def cache_leftovers(cache: Path, allowed: Iterable[str] = CACHE_ENTRIES) -> list[str]:
    """Entries of the node cache that are not documented caches."""
    if not cache.is_dir():
        return []
    allowed = tuple(allowed)
    return sorted(f"{cache}/{e.name}" for e in cache.iterdir() if not any(fnmatch.fnmatch(e.name, a) for a in allowed))


# ---------------------------------------------------------------------------------------------------- capture


def _run(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    p = subprocess.run(list(argv), capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else ""


def read_sysctls(names: Iterable[str], dirs: Iterable[str], proc_sys: Path = Path("/proc/sys")) -> list[str]:
    """``names`` (dotted) and every readable setting in ``dirs`` (dotted) -> "name=value" lines."""
    paths = {proc_sys / n.replace(".", "/") for n in names}
    for d in dirs:
        base = proc_sys / d.replace(".", "/")
        if base.is_dir():
            paths.update(p for p in base.iterdir() if p.is_file())
    out = []
    for p in sorted(paths):
        try:
            value = " ".join(p.read_text().split())
        except OSError:
            continue  # absent here, or write-only / unreadable (stable_secret)
        out.append(f"{'.'.join(p.relative_to(proc_sys).parts)}={value}")
    return out


SYSCTL_DIRS = ("net.ipv4.conf.all", "net.ipv4.conf.default", "net.ipv6.conf.all", "net.ipv6.conf.default",
               "net.bridge", "net.netfilter")  # fmt: skip
SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.ip_local_port_range", "net.ipv4.ip_nonlocal_bind", "net.core.somaxconn",
           "fs.inotify.max_user_instances", "fs.inotify.max_user_watches", "vm.max_map_count", "kernel.pid_max",
           "user.max_user_namespaces", "user.max_net_namespaces")  # fmt: skip
SYSCTL_VOLATILE = ("net.netfilter.nf_conntrack_count",)  # the number of tracked connections right now

MOUNT_ROOTS = ("/run/netns", "/run/containerd", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni")
FILE_ROOTS = ("/var/lib/cni", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/kube-proxy", "/etc/cni",
              "/opt/cni", "/opt/containerd", "/etc/kubernetes", "/var/log/containers", "/var/log/pods",
              "/usr/libexec/kubernetes")  # fmt: skip


def capture(node: Node | None = None, sections: Iterable[str] = SECTIONS) -> State:
    """The machine's state the node touches, section by section (SECTIONS; module docstring)."""
    node = node or Node.from_lib()
    want = set(sections)
    state: State = {}
    addr = _run("ip", "-j", "-d", "addr", "show")
    if "links" in want:
        state["links"] = links(addr)
    if "routes" in want:
        docker = {i["ifname"] for i in json.loads(addr or "[]") if _DOCKER_LINK.match(i["ifname"])}
        state["routes"] = routes((_run("ip", "-j", f, "route", "show", "table", "all") for f in ("-4", "-6")), docker)
        state["routes"] += rules(_run("ip", "-j", f, "rule", "show") for f in ("-4", "-6"))
    if "netns" in want:
        state["netns"] = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    if "iptables" in want:
        state["iptables"] = iptables(_run("iptables-save"), "ipv4") + iptables(_run("ip6tables-save"), "ipv6")
    if "nftables" in want:
        state["nftables"] = sorted(ln for ln in _run("nft", "list", "tables").splitlines() if ln.strip())
    if "sysctls" in want:
        values = read_sysctls((*node.sysctls, *SYSCTLS), SYSCTL_DIRS)
        state["sysctls"] = [v for v in values if v.split("=", 1)[0] not in SYSCTL_VOLATILE]
    if "mounts" in want:
        roots = (node.run, node.cache, node.kubelet_root, node.data, *MOUNT_ROOTS)
        state["mounts"] = sorted(
            f"{m[1]} {m[2]}"
            for m in (ln.split() for ln in Path("/proc/self/mounts").read_text().splitlines())
            if any(m[1] == r or m[1].startswith(r + "/") for r in roots)
        )
    if "cgroups" in want:
        cg: list[str] = []
        base = Path("/sys/fs/cgroup")
        for h in sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []:
            for d in sorted(p for p in h.iterdir() if p.is_dir() and p.name != "docker"):
                if d.name.startswith("kubepods"):
                    cg += [ln for ln in tree(d) if ln.endswith(" dir")]
                else:
                    cg.append(f"{d} dir")
        state["cgroups"] = cg
    if "processes" in want:
        markers = (node.run, node.kubelet_root, node.data, *(d + "/" for d in node.control_plane_dirs))
        state["processes"] = processes(read_procs(), markers, [f"KUBECONFIG={node.kubeconfig}"], me=os.getpid())
    if "files" in want:
        files = tree(Path("/run"), skip=RUN_FOREIGN)
        for r in FILE_ROOTS:
            files += tree(Path(r))
        files += [f"{p} exists" for p in (node.kubeconfig, *node.control_plane_dirs) if os.path.lexists(p)]
        files += cache_leftovers(Path(node.cache))
        state["files"] = files
    return state


def compare(before: Mapping[str, list[str]], after: Mapping[str, list[str]]) -> list[str]:
    """What differs, as "section: + line" (only after) and "section: - line" (only before); [] when equal."""
    out = []
    for section in sorted(set(before) | set(after)):
        b, a = Counter(before.get(section, [])), Counter(after.get(section, []))
        out += [f"{section}: - {ln}" for ln in sorted((b - a).elements())]
        out += [f"{section}: + {ln}" for ln in sorted((a - b).elements())]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m modelship_dev.hoststate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("capture", help="print the state as JSON")
    cmp_ = sub.add_parser("compare", help="compare a capture (JSON file) with the state now; exit 1 if they differ")
    cmp_.add_argument("before", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "capture":
        json.dump(capture(), sys.stdout, indent=1)
        print()
        return 0
    diff = compare(json.loads(args.before.read_text()), capture())
    print("\n".join(diff) if diff else "the machine is as it was")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
