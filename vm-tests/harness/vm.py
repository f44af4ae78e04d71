"""Boot one guest under QEMU and read back the marker lines its check unit prints on ttyS0."""

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from .build import HERE, log, run

BOOT_TIMEOUT = float(os.environ.get("STOKE_VM_BOOT_TIMEOUT", "400"))
# After STOKE-CHECK-END the guest powers off; QEMU exits with it (-no-reboot).
POWEROFF_TIMEOUT = 90.0


def accel_args():
    accel = os.environ.get("STOKE_VM_ACCEL", "tcg")
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    # /dev/kvm on these machines is a paravirtual nested kind that does not work (see
    # ../shared/notes/vm-harness-facts.md): TCG unless STOKE_VM_ACCEL=kvm.
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def blank_disk(path, size="1G"):
    if os.path.exists(path):
        os.remove(path)
    run(["truncate", "-s", size, path])
    return path


def make_seed(path, files, fmt="vfat"):
    """A NoCloud seed volume labelled cidata with the given {name: text} files."""
    d = path + ".d"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    if os.path.exists(path):
        os.remove(path)
    if fmt == "iso":
        run(["genisoimage", "-quiet", "-output", path, "-volid", "cidata", "-joliet", "-rock", d])
    else:
        run(["truncate", "-s", "2M", path])
        run(["mkfs.vfat", "-n", "CIDATA", path], stdout=subprocess.DEVNULL)
        for name in files:
            run(["mcopy", "-oi", path, os.path.join(d, name), "::" + name])
    shutil.rmtree(d)
    return path


class Boot:
    """One boot of a guest: its disks, metadata, and what the check unit reports."""

    def __init__(self, label, workdir, root, kernel, initrd):
        self.label = label
        self.workdir = workdir
        self.root = root          # qcow2 overlay (persistent between the boots of a scenario)
        self.kernel = kernel
        self.initrd = initrd
        self.disks = []           # (serial, path, readonly)
        self.nvme = []            # (serial, path): NVMe controllers, as EBS volumes on Nitro
        self.imds = None          # metadata dict for imds.py
        self.smbios = []          # -smbios arguments
        self.action = None        # shell run in the guest after the checks (e.g. stoke clean)
        self.extra = None         # shell whose output is reported as "extra"
        self.append = ""          # extra kernel command line
        self.forwards = []        # (guest ip, port, host command) more guestfwd= bridges
        self.facts = {}
        self.serial_path = os.path.join(workdir, f"{label}.serial.log")
        self.imds_log = os.path.join(workdir, f"{label}.imds.log")
        self.duration = None
        self.error = None
        self.lines = []           # the console, as lines
        self.qemu_exited = False  # the last attempt ended with QEMU's own exit
        self.retries = []         # why the boot was run again (QEMU crashes, see run())
        self.checks_ended = None  # s from QEMU's start to STOKE-CHECK-END (the rest is power-off)

    def disk(self, serial, path, readonly=False):
        self.disks.append((serial, path, readonly))
        return self

    def nvme_disk(self, serial, path):
        """An NVMe controller with one namespace: an EBS volume, whose serial is its volume id
        (QEMU's model string is its own, and it has no Amazon vendor data)."""
        self.nvme.append((serial, path))
        return self

    def qemu_cmd(self):
        cmdline = ("console=ttyS0 rw quiet loglevel=3 panic=-1 systemd.show_status=error "
                   + self.append).strip()
        cmd = ["qemu-system-x86_64", "-nodefaults", "-no-reboot", "-display", "none",
               "-M", "q35", "-smp", "2", "-m", "1024", *accel_args(),
               "-serial", "stdio", "-kernel", self.kernel, "-initrd", self.initrd,
               "-append", cmdline,
               "-drive", f"if=none,id=root,file={self.root},format=qcow2,cache=unsafe,discard=unmap",
               "-device", "virtio-blk-pci,drive=root,serial=stoke-root"]
        for i, (serial, path, ro) in enumerate(self.disks):
            fmt = "qcow2" if path.endswith(".qcow2") else "raw"
            ro_opt = ",readonly=on" if ro else ",cache=unsafe"
            cmd += ["-drive", f"if=none,id=d{i},file={path},format={fmt}{ro_opt}",
                    "-device", f"virtio-blk-pci,drive=d{i},serial={serial}"]
        for i, (serial, path) in enumerate(self.nvme):
            cmd += ["-drive", f"if=none,id=nv{i},file={path},format=raw,cache=unsafe",
                    "-device", f"nvme,drive=nv{i},serial={serial}"]
        net = ("user,id=n0,restrict=on,net=169.254.0.0/16,host=169.254.0.2,"
               "dhcpstart=169.254.0.15")
        if self.imds is not None:
            meta = os.path.join(self.workdir, f"{self.label}.imds.json")
            with open(meta, "w") as f:
                json.dump(self.imds, f, indent=1)
            responder = f"{sys.executable} -S -E {os.path.join(HERE, 'imds.py')} {meta} {self.imds_log}"
            net += ",guestfwd=tcp:169.254.169.254:80-cmd:" + responder.replace(",", ",,")
        for ip, port, prog in self.forwards:
            net += f",guestfwd=tcp:{ip}:{port}-cmd:" + prog.replace(",", ",,")
        cmd += ["-netdev", net, "-device", "virtio-net-pci,netdev=n0"]
        for s in self.smbios:
            cmd += ["-smbios", s]
        cmd += ["-fw_cfg", f"name=opt/stoke-test/label,string={self.label}"]
        for name, text in (("action", self.action), ("extra", self.extra)):
            if text:
                p = os.path.join(self.workdir, f"{self.label}.{name}.sh")
                with open(p, "w") as f:
                    f.write(text)
                cmd += ["-fw_cfg", f"name=opt/stoke-test/{name},file={p}"]
        return cmd

    def run(self):
        """Boots, waits for STOKE-CHECK-END and QEMU's exit. Sets self.facts or self.error.

        QEMU's TCG has crashed on its own assertion early in a boot (iotlb_to_section, QEMU
        10.0, about one boot in a few hundred). When it does so before the guest's initramfs
        mounts the root disk (STOKE-INITRD mounting), no disk was written: the same boot is run
        again, at most twice, and self.retries says so. Any later failure is the boot's."""
        for attempt in range(3):
            ok = self.run_once()
            if ok or not self.qemu_crashed_before_root():
                return ok
            kept = f"{self.serial_path}.crashed-{attempt + 1}"
            os.replace(self.serial_path, kept)
            self.retries.append(f"QEMU crashed before the guest mounted its root disk "
                                f"({self.error}; {os.path.basename(kept)}): booted again")
            log(f"{self.label}: {self.retries[-1]}")
        return False

    def qemu_crashed_before_root(self):
        """QEMU ended by itself (not our timeout), and the initramfs never got to the root."""
        return (self.qemu_exited and not any(l.startswith("STOKE-INITRD mounting") for l in self.lines)
                and any(l.startswith("qemu-system-") for l in self.lines))

    def run_once(self):
        self.error = None
        self.checks_ended = None
        cmd = self.qemu_cmd()
        with open(os.path.join(self.workdir, f"{self.label}.qemu.cmd"), "w") as f:
            f.write(" ".join(cmd) + "\n")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        done = threading.Event()
        lines = []

        def reader():
            with open(self.serial_path, "wb") as logf:
                for raw in proc.stdout:
                    logf.write(raw)
                    logf.flush()
                    line = raw.decode("utf-8", "replace").replace("\r", "").rstrip("\n")
                    lines.append(line)
                    if line.startswith("STOKE-CHECK-END"):
                        self.checks_ended = time.monotonic() - t0
                        done.set()
            done.set()

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        finished = done.wait(BOOT_TIMEOUT)
        self.duration = time.monotonic() - t0
        self.facts = parse_markers(lines)
        self.lines = lines
        self.qemu_exited = False
        if not finished or "_end" not in self.facts:
            # The console closes as QEMU exits: wait for its status rather than race it.
            try:
                proc.wait(5 if finished else 0.1)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                self.error = f"no STOKE-CHECK-END within {BOOT_TIMEOUT:.0f} s"
            else:
                self.qemu_exited = True
                self.error = f"QEMU exited ({proc.returncode}) before STOKE-CHECK-END"
            proc.kill()
            proc.wait()
            th.join(5)
            return False
        try:
            proc.wait(POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.error = f"guest did not power off within {POWEROFF_TIMEOUT:.0f} s of its checks"
            proc.kill()
            proc.wait()
            th.join(5)
            return False
        th.join(5)
        self.duration = time.monotonic() - t0
        return True

    def tail(self, n=60):
        try:
            with open(self.serial_path, "rb") as f:
                text = f.read().decode("utf-8", "replace").replace("\r", "")
        except OSError:
            return "(no serial log)"
        keep = [l for l in text.splitlines() if not l.startswith("STOKE-CHECK-B64 ")]
        return "\n".join(keep[-n:])


def parse_markers(lines):
    facts = {}
    for line in lines:
        # Kernel or systemd messages may share the console: find the marker anywhere in the line.
        for marker in ("STOKE-CHECK-B64 ", "STOKE-CHECK ", "STOKE-CHECK-BEGIN", "STOKE-CHECK-END"):
            pos = line.find(marker)
            if pos < 0:
                continue
            rest = line[pos + len(marker):]
            if marker == "STOKE-CHECK-BEGIN":
                facts["_begin"] = rest.strip()
            elif marker == "STOKE-CHECK-END":
                facts["_end"] = rest.strip()
            else:
                key, _, value = rest.partition(" ")
                if marker == "STOKE-CHECK-B64 ":
                    try:
                        value = base64.b64decode(value.strip()).decode("utf-8", "replace")
                    except Exception as e:  # a garbled line: keep the evidence
                        value = f"<undecodable: {e}>"
                facts[key] = value
            break
    return facts
