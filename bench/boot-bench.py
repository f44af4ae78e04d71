#!/usr/bin/env python3
"""Boot-time race: stoke against Debian's cloud-init, the no-agent floor and a shell script.

One guest image holds everything (stoke from its .deb, cloud-init 22.4 from bookworm, a shell
script unit); the kernel command line picks the variant, so every variant boots the same image with
the same NoCloud seed and the same blank ephemeral disk, from a pristine overlay (a first boot):

  A cloud-init   stoke=disabled
  B stoke        cloud-init=disabled
  C none         cloud-init=disabled stoke=disabled                (the floor)
  L shell        cloud-init=disabled stoke=disabled bench.shell=1   (the work, run concurrently)

Two more variants (not in the default set) compare stoke's two ways on a new EC2 Nitro instance:
the same work, metadata from the IMDSv2 responder (no seed), DMI saying EC2 with the instance id:

  E stoke-ec2        cloud-init=disabled                 (host keys, disk: in the network stage)
  F stoke-ec2-early  cloud-init=disabled bench.early=1   (an image layer sets before_metadata on
                                                          disks, mounts, ssh-host-keys: local stage)

The work: hostname from the seed's local-hostname, ssh host keys ed25519+ecdsa+rsa, the seed's
public key in authorized_keys, the ephemeral disk (serial eph0) made xfs and mounted at
/mnt/ephemeral. Variants alternate within each round. Per boot it records systemd-analyze, the
blame lines of the agent's units, the time from kernel start to "boot work done", whether the work
happened, and the agent's peak RSS (GNU time around each agent unit's ExecStart).

With --no-rsa, every agent makes ed25519 and ecdsa host keys only: RSA-3072 generation takes 2–10 s
of prime search under TCG, at random, and hides every other cost on the critical path (on real
hardware it takes a fraction of a second). The RSA-free race is the one that measures the agents.

With --user-code, the seed's user-data also carries the user's code most fleets send: two
write_files entries and a runcmd of three commands (USER_CODE below); the shell script does the same
(writes the two files, runs the three commands), so each variant's added time includes it.

Usage: bench/boot-bench.py [--rounds N] [--jobs N] [--variants ACBL|EF] [--no-rsa] [--user-code]
                          [--out FILE.md]
(as root)
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "vm-tests"))

from harness import build, image  # noqa: E402
from harness.scenarios import ec2_metadata, ec2_smbios  # noqa: E402
from harness.vm import Boot, blank_disk, make_seed  # noqa: E402

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0X0Vx4oSxCRzbJH2ipd8f5rYR5dBC0zsbWKcUU1Ls bench@stoke"
HOST = "bench-host"

VARIANTS = {
    "A": ("cloud-init", "stoke=disabled"),
    "B": ("stoke", "cloud-init=disabled"),
    "C": ("none", "cloud-init=disabled stoke=disabled"),
    "L": ("shell", "cloud-init=disabled stoke=disabled bench.shell=1"),
    "E": ("stoke-ec2", "cloud-init=disabled"),
    "F": ("stoke-ec2-early", "cloud-init=disabled bench.early=1"),
}
EC2_VARIANTS = "EF"
EC2_IID = "i-0be4c5bbe4c5bbe40"
AGENT_UNITS = {
    "A": ["cloud-init-local.service", "cloud-init.service", "cloud-config.service", "cloud-final.service"],
    "B": ["stoke-local.service", "stoke-network.service", "stoke-final.service"],
    "C": [],
    "L": ["bench-shell.service"],
}
AGENT_UNITS["E"] = AGENT_UNITS["F"] = AGENT_UNITS["B"]
DONE_UNIT = {"A": "cloud-final.service", "B": "stoke.target", "C": "multi-user.target",
             "L": "bench-shell.service", "E": "stoke.target", "F": "stoke.target"}

CLOUD_CFG = """\
# bench: NoCloud only, no network rendering (the image's networkd config stays, as with stoke)
datasource_list: [NoCloud, None]
network: {config: disabled}
ssh_genkeytypes: @KEYTYPES@
system_info:
  default_user: {name: admin}
fs_setup:
  - label: ephemeral
    filesystem: xfs
    device: /dev/disk/by-id/virtio-eph0
    partition: none
mounts:
  - [/dev/disk/by-id/virtio-eph0, /mnt/ephemeral, xfs, "defaults,nofail", "0", "2"]
"""

STOKE_CFG = """\
# bench: the same work as cloud-init's config
default_user: admin
ssh_genkeytypes: @KEYTYPES@
disks:
  devices: ["/dev/disk/by-id/virtio-eph0"]
  mount_point: /mnt/ephemeral
"""

# --user-code: the same for cloud-init and stoke (one seed), and for the shell script below.
USER_CODE = """#cloud-config
write_files:
  - path: /etc/bench/app.conf
    content: |
      role = web
      port = 8080
  - path: /etc/bench/app.env
    encoding: b64
    content: QVBQX0VOVj1wcm9kCg==
    permissions: '0600'
runcmd:
  - mkdir -p /var/lib/bench
  - [sh, -c, "uname -r > /var/lib/bench/runcmd"]
  - echo done >> /var/lib/bench/runcmd
"""

SHELL_USER_CODE = r"""
if [ -e /etc/bench-user-code ]; then
  t write_files sh -c "mkdir -p /etc/bench && printf 'role = web\nport = 8080\n' > /etc/bench/app.conf && (umask 077; printf 'APP_ENV=prod\n' > /etc/bench/app.env)" &
  t runcmd sh -c "mkdir -p /var/lib/bench && uname -r > /var/lib/bench/runcmd && echo done >> /var/lib/bench/runcmd" &
fi
"""

SHELL_SCRIPT = r"""#!/bin/sh
# The physical limit: the same work as the agents, commands run concurrently. Each job's duration
# goes to /run/bench-shell.times (reported by the bench, next to stoke's per-module durations).
set -u
seed=/run/bench-seed
t() { name=$1; shift; s=$(date +%s.%N); "$@"; rc=$?; e=$(date +%s.%N); awk -v n=$name -v s=$s -v e=$e -v rc=$rc 'BEGIN { printf "%s %.2fs rc=%s\n", n, e - s, rc }' >> /run/bench-shell.times; }
mkdir -p $seed
dev=$(blkid -L cidata || blkid -L CIDATA)
mount -o ro "$dev" $seed
host=$(sed -n 's/^local-hostname: *//p' $seed/meta-data)
key=$(sed -n 's/^ *- *\(ssh-.*\)$/\1/p' $seed/meta-data)
umount $seed
t hostname sh -c "hostname '$host'; echo '$host' > /etc/hostname; sed -i '/^127.0.1.1/d' /etc/hosts; echo '127.0.1.1 $host' >> /etc/hosts" &
t ed25519 ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key &
t ecdsa ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key &
@RSA@
t authkey sh -c "install -d -m 700 -o admin -g admin /home/admin/.ssh && echo '$key' > /home/admin/.ssh/authorized_keys && chown admin: /home/admin/.ssh/authorized_keys" &
t disk sh -c "udevadm wait --timeout=30 /dev/disk/by-id/virtio-eph0 && mkfs.xfs -q -f -L ephemeral /dev/disk/by-id/virtio-eph0 && mkdir -p /mnt/ephemeral && mount /dev/disk/by-id/virtio-eph0 /mnt/ephemeral && echo 'LABEL=ephemeral /mnt/ephemeral xfs defaults,nofail 0 2' >> /etc/fstab" &
@USER_CODE@
wait
""".replace("@USER_CODE@", SHELL_USER_CODE)

SHELL_UNIT = """\
[Unit]
Description=bench: the agents' work as a shell script
DefaultDependencies=no
ConditionKernelCommandLine=bench.shell=1
After=systemd-remount-fs.service local-fs.target systemd-udev-trigger.service
Before=network-pre.target ssh.service shutdown.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/bench-shell

[Install]
WantedBy=multi-user.target
"""

# Reported by the check unit (fw_cfg "extra"): the work, and the agents' peak RSS.
EXTRA = r"""
echo "hostname=$(hostname)"
n=0; for t in ed25519 ecdsa rsa; do [ -s /etc/ssh/ssh_host_${t}_key.pub ] && n=$((n+1)); done
echo "hostkeys=$n"
echo "authkey=$(cat /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys 2>/dev/null | grep -c 'bench@stoke')"
echo "mounted=$(findmnt -rn -o FSTYPE /mnt/ephemeral)"
echo "user_code=$(cat /etc/bench/app.conf /etc/bench/app.env /var/lib/bench/runcmd 2>/dev/null | wc -l)"
[ -e /run/bench-shell.times ] && sed 's/^/shelltime=/' /run/bench-shell.times
for f in /run/bench-mem/*; do [ -e "$f" ] && echo "mem.$(basename $f)=$(tail -n1 $f)"; done
systemd-analyze blame | grep -E 'cloud-(init|config|final)|stoke-(local|network|final)|bench-shell' | sed 's/^ */blame=/'
for u in cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service \
         stoke-local.service stoke-network.service stoke-final.service stoke.target \
         bench-shell.service multi-user.target; do
  echo "t.$u=$(systemctl show -p ActiveEnterTimestampMonotonic --value $u) $(systemctl show -p InactiveExitTimestampMonotonic --value $u)"
done
"""


# The unit whose time is the agent's critical path (the host keys are made in it).
CRITICAL_UNIT = {"B": "stoke-local.service", "L": "bench-shell.service"}


# Variant F: an image layer (written before stoke-local starts) runs the modules that need no
# metadata in the local stage of a new EC2 instance.
EARLY_UNIT = """\
[Unit]
Description=bench: before_metadata image layer
DefaultDependencies=no
ConditionKernelCommandLine=bench.early=1
After=systemd-remount-fs.service
Before=stoke-local.service

[Service]
Type=oneshot
ExecStart=/bin/cp /etc/stoke/bench-early.yaml /etc/stoke/stoke.d/60-early.yaml

[Install]
WantedBy=stoke-local.service
"""


def exec_starts(unit_path):
    return [l.split("=", 1)[1].strip() for l in open(unit_path) if l.startswith("ExecStart=")]


def key_types(rsa):
    return ["ed25519", "ecdsa", "rsa"] if rsa else ["ed25519", "ecdsa"]


def tweak(tree, modules, user_code=False, rsa=True):
    def w(rel, text, mode=0o644):
        image.write(os.path.join(tree, rel), text, mode)

    if user_code:
        w("etc/bench-user-code", "")

    types = "[" + ", ".join(key_types(rsa)) + "]"
    w("etc/cloud/cloud.cfg.d/90-bench.cfg", CLOUD_CFG.replace("@KEYTYPES@", types))
    # Only keys of modules this stoke has (an unknown key would be a config error).
    cfg = STOKE_CFG.replace("@KEYTYPES@", types)
    if "disks" not in modules:
        cfg = cfg.split("disks:")[0]
    w("etc/stoke/stoke.d/50-bench.yaml", cfg)
    early = [m for m in ("disks", "mounts", "ssh-host-keys") if m in modules]
    w("etc/stoke/bench-early.yaml",
      "modules:\n" + "".join(f"  {m}: {{before_metadata: true}}\n" for m in early))
    w("etc/systemd/system/bench-early.service", EARLY_UNIT)
    subprocess.run(["systemctl", "--root", tree, "-q", "enable", "bench-early.service"], check=True)
    rsa_job = "t rsa ssh-keygen -q -t rsa -b 3072 -N '' -f /etc/ssh/ssh_host_rsa_key &" if rsa else ""
    w("usr/local/sbin/bench-shell", SHELL_SCRIPT.replace("@RSA@", rsa_job), 0o755)
    w("etc/systemd/system/bench-shell.service", SHELL_UNIT)
    subprocess.run(["systemctl", "--root", tree, "-q", "enable", "bench-shell.service"], check=True)
    # The floor (C) makes no host keys: without this, sshd would fail and restart in a loop and
    # inflate the floor. Where an agent made keys (before ssh.service), the condition holds.
    w("etc/systemd/system/ssh.service.d/bench.conf",
      "[Unit]\nConditionPathExists=/etc/ssh/ssh_host_ed25519_key\n")
    # The check unit reports once every variant's work is done.
    w("etc/systemd/system/stoke-check.service.d/bench.conf",
      "[Unit]\nAfter=cloud-final.service cloud-init.target bench-shell.service\n")
    # Peak RSS of each agent unit: GNU time around its ExecStart (negligible overhead).
    for units in AGENT_UNITS.values():
        for u in units:
            path = None
            for d in ("lib/systemd/system", "usr/lib/systemd/system", "etc/systemd/system"):
                p = os.path.join(tree, d, u)
                if os.path.exists(p) and not os.path.islink(p):
                    path = p
            if path is None:
                continue
            lines = ["[Service]", "ExecStart="]
            for cmd in exec_starts(path):
                prefix = ""
                while cmd and cmd[0] in "-@+!:":
                    prefix += cmd[0]
                    cmd = cmd[1:]
                lines.append(f"ExecStart={prefix}/usr/bin/time -f %%M -a -o /run/bench-mem/{u} {cmd}")
            w(f"etc/systemd/system/{u}.d/bench-mem.conf",
              "\n".join(lines) + "\nExecStartPre=+/bin/mkdir -p /run/bench-mem\n")


def secs(text, label):
    m = re.search(r"([\d.]+)(min|s|ms)\s*\(" + label + r"\)", text)
    if not m:
        return None
    v = float(m.group(1))
    return v * 60 if m.group(2) == "min" else v / 1000 if m.group(2) == "ms" else v


def analyze_total(text):
    """'Startup finished in 4.6s (kernel) + 16.8s (userspace) = 21.4s' → seconds (handles 1min 2.3s)."""
    m = re.search(r"=\s*((?:\d+min\s*)?[\d.]+m?s)\s*$", text.splitlines()[0] if text else "")
    if not m:
        return None
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(min|ms|s)", m.group(1)):
        total += float(num) * (60 if unit == "min" else 0.001 if unit == "ms" else 1)
    return total


def blame_secs(line):
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(min|ms|s)\b", line.split()[0] if line.split() else ""):
        total += float(num) * (60 if unit == "min" else 0.001 if unit == "ms" else 1)
    return total


def parse_extra(text):
    d = {"blame": []}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        if k.strip() in ("blame", "shelltime"):
            d.setdefault(k.strip(), []).append(v.strip())
        else:
            d[k.strip()] = v.strip()
    return d


def one_boot(env, variant, rnd):
    name, cmdline = VARIANTS[variant]
    label = f"r{rnd}-{variant}-{name}"
    wd = env["dir"]
    root = os.path.join(wd, f"{label}.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", env["img"], "-F", "raw", root],
                   check=True)
    eph = blank_disk(os.path.join(wd, f"{label}.eph0.raw"))
    b = Boot(label, wd, root, env["kernel"], env["initrd"])
    b.disk("eph0", eph)
    if variant in EC2_VARIANTS:
        md = ec2_metadata(EC2_IID, "#cloud-config\n{}\n", public_key=PUBKEY)
        md["meta-data"]["local-hostname"] = HOST
        b.imds = md
        b.smbios = ec2_smbios(EC2_IID)
    else:
        b.disk("cidata", env["seed"], readonly=True)
    b.append = cmdline
    b.extra = EXTRA
    ok = b.run()
    for p in (root, eph):
        os.remove(p)
    res = {"variant": variant, "label": label, "ok": ok, "error": b.error, "wall": b.duration,
           "rsa": env["rsa"], "load": os.getloadavg()[0]}
    if not ok:
        res["tail"] = b.tail(40)
        return res
    f = b.facts
    ex = parse_extra(f.get("extra", ""))
    res["total"] = analyze_total(f.get("analyze", ""))
    res["kernel"] = secs(f.get("analyze", ""), "kernel")
    res["userspace"] = secs(f.get("analyze", ""), "userspace")
    done = ex.get(f"t.{DONE_UNIT[variant]}", "0 0").split()
    res["work_done"] = int(done[0]) / 1e6 if done and done[0].isdigit() and int(done[0]) else None
    # When the critical-path unit started (kernel start → its ExecStart): ordering costs show here.
    crit = CRITICAL_UNIT.get(variant)
    start = ex.get(f"t.{crit}", "0 0").split() if crit else []
    res["unit_start"] = int(start[1]) / 1e6 if len(start) > 1 and start[1].isdigit() and int(start[1]) else None
    units = AGENT_UNITS[variant]
    blame = [l for l in ex["blame"] if any(u in l for u in units)]
    res["blame"] = blame
    # What the time went to: the shell's jobs, stoke's modules (from `stoke status --json`).
    if variant == "L":
        res["parts"] = ex.get("shelltime", [])

    elif variant in "BEF":
        try:
            st = json.loads(f.get("status_json", "{}"))
            mods = st.get("modules", {})
            res["parts"] = [f"{n} {m.get('duration_ms', 0) / 1000:.2f}s" for n, m in
                            sorted(mods.items(), key=lambda kv: -(kv[1].get("duration_ms") or 0))
                            if (m.get("duration_ms") or 0) >= 50]
            # The local stage's own overhead: process start-up before it, config + datasource in it.
            for stage in ("local", "network") if variant in EC2_VARIANTS else ("local",):
                ss = st.get("stages", {}).get(stage, {})
                for key, name in (("startup_ms", "start-up"), ("prepare_ms", "config+datasource")):
                    if ss.get(key) is not None:
                        res["parts"].append(f"{stage} {name} {ss[key] / 1000:.2f}s")
            res["critical"] = critical_path(st, res.get("unit_start"))
        except ValueError:
            pass
    res["agent_blame_sum"] = round(sum(blame_secs(l) for l in blame), 3)
    mems = [int(v) for k, v in ex.items() if k.startswith("mem.") and isinstance(v, str) and v.isdigit()]
    res["peak_rss_kib"] = max(mems) if mems else None
    res["work"] = {"hostname": ex.get("hostname") == HOST,
                   "hostkeys": ex.get("hostkeys") == str(len(key_types(env["rsa"]))),
                   "authorized_key": ex.get("authkey", "0") not in ("", "0"),
                   "disk_mounted": ex.get("mounted") == "xfs"}
    if env.get("user_code"):
        # app.conf 2 lines, app.env 1, runcmd's file 2.
        res["work"]["user_code"] = ex.get("user_code") == "5"
    return res


def critical_path(st, unit_start):
    """stoke's own timings of the local stage, in seconds after kernel start: the unit's start
    (systemd), the process's first instruction of the stage (after start-up), the end of config +
    datasource, each module's start and end, the disks steps, the stage's end."""
    k = st.get("kernel_started_unix")
    ss = st.get("stages", {}).get("local", {})
    if not k or not ss.get("started_unix"):
        return None
    at = lambda unix: round(unix - k, 3)  # noqa: E731
    begun = at(ss["started_unix"])
    cp = {"unit_start": unit_start, "stage_start": begun,
          "startup": round((ss.get("startup_ms") or 0) / 1000, 3),
          "prepared": round(begun + (ss.get("prepare_ms") or 0) / 1000, 3),
          "stage_end": round(begun + (ss.get("duration_ms") or 0) / 1000, 3), "modules": {}}
    for name, m in st.get("modules", {}).items():
        if m.get("stage") == "local" and m.get("started_unix") and m.get("duration_ms") is not None:
            start = at(m["started_unix"])
            cp["modules"][name] = (start, round(start + m["duration_ms"] / 1000, 3))
    steps = ((st.get("modules", {}).get("disks") or {}).get("details") or {}).get("steps") or []
    cp["disks_steps"] = [(s.get("step"), round((s.get("ms") or 0) / 1000, 3)) for s in steps]
    return cp


def critical_line(cp):
    """One line: kernel-relative times of the local stage's milestones."""
    if not cp:
        return "–"
    mods = sorted(cp["modules"].items(), key=lambda kv: kv[1][0])
    out = [f"unit {cp['unit_start']:.2f}" if cp.get("unit_start") else "unit –",
           f"stage {cp['stage_start']:.2f} (start-up {cp['startup']:.2f})",
           f"prepared {cp['prepared']:.2f}"]
    out += [f"{n} {a:.2f}→{b:.2f}" for n, (a, b) in mods if b - a >= 0.02]
    if cp.get("disks_steps"):
        out.append("disks steps " + ", ".join(f"{s} {t:.2f}" for s, t in cp["disks_steps"]))
    out.append(f"end {cp['stage_end']:.2f}")
    return " | ".join(out)


def keygen_secs(res):
    """The boot's RSA key generation time: the shell's rsa job, stoke's ssh-host-keys module (it
    runs the three ssh-keygen at once, so its time is the RSA key's plus a little)."""
    for part in res.get("parts") or []:
        name, _, rest = part.partition(" ")
        if (res["variant"], name) in (("L", "rsa"), ("B", "ssh-host-keys"), ("E", "ssh-host-keys"),
                                      ("F", "ssh-host-keys")):
            return float(rest.split()[0].rstrip("s"))
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, unit="s"):
    return "–" if x is None else f"{x:.1f} {unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1, help="VMs at a time (1 = least noise)")
    ap.add_argument("--variants", default="ACBL")
    ap.add_argument("--out", help="write the markdown report here too")
    ap.add_argument("--user-code", action="store_true",
                    help="user-data with write_files and runcmd (the shell script does the same)")
    ap.add_argument("--no-rsa", action="store_true",
                    help="host keys ed25519 + ecdsa only, for every agent (no RSA lottery)")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="only print the report of an earlier run's results.json")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
        print(make_report(results, [v for v in args.variants if any(r["variant"] == v for r in results)]))
        return 0

    t0 = time.monotonic()
    cache = os.path.join(REPO, "target", "vm")
    art = build.Artefacts(cache)
    kernel, initrd = art.kernel(), art.initrd()
    rootfs = art.rootfs(extra_packages=["cloud-init", "time"])
    binary = image.find_stoke_binary()
    wd = os.path.join(cache, "bench", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(wd)
    modules = image.known_modules(binary)
    print(f"bench: stoke modules: {', '.join(modules)}", flush=True)
    img = image.build_root_image(rootfs, wd, binary,
                                 tweak=lambda tree: tweak(tree, modules, args.user_code, not args.no_rsa))
    seed = make_seed(os.path.join(wd, "seed.img"), {
        "meta-data": f"instance-id: iid-bench-0001\nlocal-hostname: {HOST}\npublic-keys:\n  - {PUBKEY}\n",
        "user-data": USER_CODE if args.user_code else "#cloud-config\n{}\n",
    })
    env = {"dir": wd, "img": img, "kernel": kernel, "initrd": initrd, "seed": seed,
           "user_code": args.user_code, "rsa": not args.no_rsa}
    order = list(args.variants)
    plan = []
    for r in range(args.rounds):
        rot = order[r % len(order):] + order[:r % len(order)]   # alternate the order per round
        plan += [(v, r + 1) for v in rot]
    print(f"bench: {len(plan)} boots ({args.rounds} rounds of {''.join(order)}), {args.jobs} at a time,"
          f" host keys {'+'.join(key_types(env['rsa']))}, stoke {binary},"
          f" load average {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for res in pool.map(lambda p: one_boot(env, *p), plan):
            results.append(res)
            brief = (f"total {fmt(res.get('total'))}, work done at {fmt(res.get('work_done'))}, "
                     f"agent units {fmt(res.get('agent_blame_sum'))}, peak RSS "
                     f"{res.get('peak_rss_kib') or '–'} KiB, work {res.get('work')}"
                     if res["ok"] else f"FAILED: {res['error']}\n{res.get('tail', '')}")
            print(f"  {res['label']:18} {brief}", flush=True)
    with open(os.path.join(wd, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    os.remove(img)
    report = make_report(results, order)
    print()
    print(report)
    print(f"\nbench wall time {time.monotonic() - t0:.0f} s; raw results {wd}/results.json")
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    return 0 if all(r["ok"] for r in results) else 1


def make_report(results, order):
    rsa = any(r.get("rsa", True) for r in results)
    lines = []
    floor = med([r.get("total") for r in results if r["variant"] == "C" and r["ok"]])
    lines.append("| Variant | boots ok | median boot (systemd-analyze total) | added over floor | "
                 "median kernel→work done | median agent unit time (blame sum) | median peak RSS | work done |")
    lines.append("|---|---|---|---|---|---|---|---|")
    added = {}
    for v in order:
        rs = [r for r in results if r["variant"] == v]
        ok = [r for r in rs if r["ok"]]
        tot = med([r.get("total") for r in ok])
        added[v] = (tot - floor) if (tot is not None and floor is not None) else None
        rss = med([r.get("peak_rss_kib") for r in ok])
        work = "–" if v == "C" else (
            "all" if ok and all(all(r["work"].values()) for r in ok) else
            "; ".join(sorted({k for r in ok for k, val in r["work"].items() if not val})) + " missing")
        lines.append(f"| {v} {VARIANTS[v][0]} | {len(ok)}/{len(rs)} | {fmt(tot)} | {fmt(added[v])} | "
                     f"{fmt(med([r.get('work_done') for r in ok]))} | "
                     f"{fmt(med([r.get('agent_blame_sum') for r in ok]))} | "
                     f"{'–' if rss is None else f'{rss / 1024:.1f} MiB'} | {work} |")
    summary = []
    if added.get("B") is not None and added.get("L"):
        summary.append(f"stoke adds {added['B']:.1f} s over the floor, the shell script "
                       f"{added['L']:.1f} s: ratio stoke/shell = {added['B'] / added['L']:.2f} "
                       f"(goal ≤ 1.10)")
    # A new EC2 instance, stoke's two ways, paired per round: when the boot work was done.
    ec2 = {}
    for r in results:
        if r["ok"] and r["variant"] in EC2_VARIANTS and r.get("work_done"):
            ec2.setdefault(r["label"].split("-")[0], {})[r["variant"]] = r["work_done"]
    diffs = [d["F"] - d["E"] for d in ec2.values() if "E" in d and "F" in d]
    if diffs:
        e = med([d.get("E") for d in ec2.values()])
        f = med([d.get("F") for d in ec2.values()])
        summary.append(f"new EC2 instance, kernel → stoke.target, medians: E (network stage) {e:.2f} s, "
                       f"F (before_metadata) {f:.2f} s; paired per round F − E: median {med(diffs):+.2f} s "
                       f"({sum(x < 0 for x in diffs)} of {len(diffs)} rounds faster)")
        # RSA luck swings both by seconds: the same, minus each boot's own key generation time.
        net_ec2 = {v: med([r["work_done"] - keygen_secs(r) for r in results
                           if r["ok"] and r["variant"] == v and r.get("work_done") and keygen_secs(r)])
                   for v in EC2_VARIANTS}
        if rsa and net_ec2["E"] and net_ec2["F"]:
            summary.append(f"the same minus each boot's RSA key generation, medians: E {net_ec2['E']:.2f} s, "
                           f"F {net_ec2['F']:.2f} s (F − E {net_ec2['F'] - net_ec2['E']:+.2f} s)")
    if added.get("A") is not None and added.get("B") is not None:
        summary.append(f"cloud-init adds {added['A']:.1f} s; stoke saves {added['A'] - added['B']:.1f} s "
                       f"of boot against cloud-init")
    # Paired per round (each round boots every variant back to back): less sensitive to the
    # machine's load drifting over the run than the medians of whole columns.
    per_round = {}
    for r in results:
        if r["ok"] and r.get("total") is not None:
            per_round.setdefault(r["label"].split("-")[0], {})[r["variant"]] = r["total"]
    paired = {v: [] for v in order}
    for rnd, totals in sorted(per_round.items()):
        if "C" in totals:
            for v, tot in totals.items():
                paired[v].append(tot - totals["C"])
    if paired.get("B") and paired.get("L"):
        pb, pl = med(paired["B"]), med(paired["L"])
        summary.append(f"paired per round (variant − floor of the same round), medians: "
                       + ", ".join(f"{v} {VARIANTS[v][0]} {med(paired[v]):+.1f} s"
                                   for v in order if paired.get(v)))
        if pl:
            summary.append(f"paired ratio stoke/shell = {pb / pl:.2f}")
    # RSA key generation is the critical path of both and its time is luck (prime search): take
    # each boot's own key generation time out to compare what is left, the agents' overheads.
    # (Without RSA in the race, ssh-host-keys is no lottery: nothing is taken out.)
    net = {}
    for r in results if rsa else []:
        rnd = r["label"].split("-")[0]
        floor_r = per_round.get(rnd, {}).get("C")
        kg = keygen_secs(r)
        if r["ok"] and kg and r.get("total") is not None and floor_r is not None:
            net.setdefault(r["variant"], []).append(r["total"] - floor_r - kg)
    # The same at the unit level: the agent's critical-path unit (stoke-local / the script's unit)
    # minus its key generation. Free of the floor's own round-to-round variation.
    unit = {}
    for r in results if rsa else []:
        kg = keygen_secs(r)
        name = CRITICAL_UNIT.get(r["variant"])
        line = next((l for l in r.get("blame") or [] if name and name in l), None)
        if r["ok"] and kg and line:
            unit.setdefault(r["variant"], []).append(blame_secs(line) - kg)
    if unit.get("B") and unit.get("L"):
        summary.append("critical-path unit time minus its RSA key generation, medians: "
                       f"stoke-local {med(unit['B']):.2f} s, shell script {med(unit['L']):.2f} s "
                       f"(difference {med(unit['B']) - med(unit['L']):+.2f} s)")
    starts = {v: [r.get("unit_start") for r in results if r["ok"] and r["variant"] == v] for v in "BL"}
    if med(starts["B"]) and med(starts["L"]):
        summary.append("critical-path unit start after kernel start, medians: "
                       f"stoke-local {med(starts['B']):.2f} s, shell script {med(starts['L']):.2f} s")
    if net.get("B") and net.get("L"):
        summary.append("added over the floor minus the boot's own RSA key generation time, medians: "
                       f"stoke {med(net['B']):+.2f} s, shell {med(net['L']):+.2f} s "
                       f"(stoke's overhead beyond the shell's: {med(net['B']) - med(net['L']):+.2f} s)")
    # The critical-path unit's own time (its blame line), with the RSA-free goal: within 0.3 s.
    local = {}
    for r in results:
        name = CRITICAL_UNIT.get(r["variant"])
        line = next((l for l in r.get("blame") or [] if name and name in l), None)
        if r["ok"] and line:
            local.setdefault(r["variant"], []).append(blame_secs(line))
    if local.get("B") and local.get("L"):
        rng = lambda xs: f"{min(xs):.2f}–{max(xs):.2f}"  # noqa: E731
        d = med(local["B"]) - med(local["L"])
        summary.append(f"local unit time, median (range): stoke-local {med(local['B']):.2f} s "
                       f"({rng(local['B'])}), shell script {med(local['L']):.2f} s ({rng(local['L'])}): "
                       f"difference {d:+.2f} s (goal ≤ +0.30 s{'' if rsa else ': ' + ('met' if d <= 0.3 else 'not met')})")
    if added.get("B") is not None and added.get("L") and not rsa:
        ratio = added["B"] / added["L"]
        summary.append(f"RSA-free goal: added time ratio {ratio:.2f} ≤ 1.10: {'met' if ratio <= 1.10 else 'not met'}")
    loads = [r.get("load") for r in results if r.get("load") is not None]
    if loads:
        summary.append(f"host keys: {'ed25519+ecdsa+rsa' if rsa else 'ed25519+ecdsa (no RSA)'}; "
                       f"1-min load average at each boot's end: median {med(loads):.1f}, "
                       f"range {min(loads):.1f}–{max(loads):.1f}")
    blame_lines = ["", "Blame lines of the agents' units, per boot (stoke: its local stage's critical path from"
                   " `stoke status --json`, seconds after kernel start):", "```"]
    for r in results:
        if r["ok"] and r.get("blame"):
            blame_lines.append(f"{r['label']}: " + " | ".join(r["blame"]))
            if r.get("parts"):
                blame_lines.append(f"{'':{len(r['label'])}}  parts: " + " | ".join(r["parts"]))
            if r.get("critical"):
                blame_lines.append(f"{'':{len(r['label'])}}  path: " + critical_line(r["critical"]))
    blame_lines.append("```")
    return "\n".join(lines + [""] + summary + blame_lines)


if __name__ == "__main__":
    sys.exit(main())
