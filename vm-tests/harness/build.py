"""Build and cache the VM test artefacts under target/vm/.

Cached between runs (rebuilt when absent or when their recipe changes):
  kernel-<ver>/      the Debian cloud kernel (.deb extracted), modules, depmod'ed
  initrd-<key>.gz    busybox-static + virtio_pci + virtio_blk; finds the root disk by serial
  rootfs-<key>/      mmdebstrap minbase bookworm, keyed on the package list
Per run (under the run directory):
  root.img           the rootfs + guest test files + the current stoke (.deb, or binary + units)
"""

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # vm-tests/
REPO = os.path.dirname(HERE)
GUEST = os.path.join(HERE, "guest")

SUITE = "bookworm"
MIRROR = os.environ.get("STOKE_VM_MIRROR", "http://deb.debian.org/debian")

# The guest's packages. Changing this list (or ROOTFS_RECIPE) rebuilds the rootfs cache.
BASE_PACKAGES = [
    "systemd-sysv", "udev", "kmod", "mdadm", "xfsprogs", "e2fsprogs", "iproute2",
    "openssh-server", "openssh-client", "curl", "dosfstools", "ca-certificates",
    # growpart (and sfdisk, through fdisk) for the rootfs module; sudo for created users' rules.
    "cloud-guest-utils", "sudo",
]
ROOTFS_RECIPE = "3"
INITRD_RECIPE = "3"

# Kernel modules copied into the guest (plus their dependencies).
GUEST_MODULES = [
    "virtio_pci", "virtio_blk", "virtio_net", "md_mod", "raid0", "raid1", "xfs", "vfat",
    "nls_cp437", "nls_ascii", "nls_iso8859-1", "nls_utf8", "isofs", "qemu_fw_cfg",
]
INITRD_MODULES = ["virtio_pci", "virtio_blk"]


def log(msg):
    print(f"[vm-tests] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def out(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def key_of(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


class Artefacts:
    def __init__(self, cache_dir):
        self.cache = cache_dir
        os.makedirs(self.cache, exist_ok=True)
        self.kver = None
        self.kdir = None

    # ---------------------------------------------------------------- kernel
    def kernel(self):
        pkg = os.environ.get("STOKE_VM_KERNEL_PKG")
        if not pkg:
            existing = sorted(glob.glob(os.path.join(self.cache, "kernel-*/vmlinuz")))
            if existing and os.environ.get("STOKE_VM_REFRESH") != "1":
                kdir = os.path.dirname(existing[-1])
                return self._use_kernel(kdir)
            deps = out(["apt-cache", "depends", "linux-image-cloud-amd64"])
            pkg = next(l.split(":", 1)[1].strip() for l in deps.splitlines()
                       if l.strip().startswith("Depends:") and "linux-image-" in l)
        kdir = os.path.join(self.cache, "kernel-" + pkg.replace("linux-image-", ""))
        if os.path.exists(os.path.join(kdir, "vmlinuz")):
            return self._use_kernel(kdir)
        log(f"kernel: downloading {pkg}")
        tmp = kdir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        run(["apt-get", "download", "-q", pkg], cwd=tmp, stdout=subprocess.DEVNULL)
        deb = glob.glob(os.path.join(tmp, "*.deb"))[0]
        run(["dpkg-deb", "-x", deb, os.path.join(tmp, "x")])
        os.remove(deb)
        x = os.path.join(tmp, "x")
        vmlinuz = glob.glob(os.path.join(x, "boot", "vmlinuz-*"))[0]
        kver = os.path.basename(vmlinuz)[len("vmlinuz-"):]
        shutil.move(vmlinuz, os.path.join(tmp, "vmlinuz"))
        moddir = None
        for base in ("usr/lib/modules", "lib/modules"):
            if os.path.isdir(os.path.join(x, base, kver)):
                moddir = os.path.join(x, base)
        os.makedirs(os.path.join(tmp, "lib"), exist_ok=True)
        shutil.move(moddir, os.path.join(tmp, "lib", "modules"))
        shutil.rmtree(x)
        run(["depmod", "-b", tmp, kver])
        with open(os.path.join(tmp, "kver"), "w") as f:
            f.write(kver)
        os.rename(tmp, kdir)
        return self._use_kernel(kdir)

    def _use_kernel(self, kdir):
        self.kdir = kdir
        with open(os.path.join(kdir, "kver")) as f:
            self.kver = f.read().strip()
        return os.path.join(kdir, "vmlinuz")

    def module_files(self, names):
        """Module files (relative to lib/modules/<kver>/), dependencies first, deduplicated."""
        files = []
        for name in names:
            res = subprocess.run(["modprobe", "-d", self.kdir, "-S", self.kver,
                                  "--show-depends", name], capture_output=True, text=True)
            if res.returncode != 0:
                if "builtin" in res.stderr or "builtin" in res.stdout:
                    continue
                raise RuntimeError(f"modprobe --show-depends {name}: {res.stderr.strip()}")
            for line in res.stdout.splitlines():
                parts = line.split()
                if parts and parts[0] == "insmod":
                    path = parts[1]
                    rel = path.split(f"/modules/{self.kver}/", 1)[1]
                    if rel not in files:
                        files.append(rel)
        return files

    # ---------------------------------------------------------------- initrd
    def initrd(self):
        self.kernel()
        key = key_of(INITRD_RECIPE, self.kver, open(os.path.join(GUEST, "initrd-init")).read())
        path = os.path.join(self.cache, f"initrd-{key}.gz")
        if os.path.exists(path):
            return path
        log("initrd: building")
        tmp = path + ".d"
        shutil.rmtree(tmp, ignore_errors=True)
        for d in ("bin", "proc", "sys", "dev", "newroot", "lib/modules"):
            os.makedirs(os.path.join(tmp, d))
        shutil.copy("/bin/busybox", os.path.join(tmp, "bin", "busybox"))
        shutil.copy(os.path.join(GUEST, "initrd-init"), os.path.join(tmp, "init"))
        os.chmod(os.path.join(tmp, "init"), 0o755)
        order = []
        for rel in self.module_files(INITRD_MODULES):
            src = os.path.join(self.kdir, "lib", "modules", self.kver, rel)
            name = os.path.basename(rel)
            if name.endswith(".xz"):
                run(["xz", "-dc", src], stdout=open(os.path.join(tmp, "lib/modules", name[:-3]), "wb"))
                name = name[:-3]
            elif name.endswith(".zst"):
                run(["zstd", "-qdc", src], stdout=open(os.path.join(tmp, "lib/modules", name[:-4]), "wb"))
                name = name[:-4]
            else:
                shutil.copy(src, os.path.join(tmp, "lib/modules", name))
            order.append(name)
        with open(os.path.join(tmp, "modules.order"), "w") as f:
            f.write("\n".join(order) + "\n")
        files = out(["find", "."], cwd=tmp)
        with open(path + ".tmp", "wb") as f:
            cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tmp,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=f)
            cpio.stdin.write(files.encode())
            cpio.stdin.close()
            cpio.stdout.close()
            if gz.wait() != 0 or cpio.wait() != 0:
                raise RuntimeError("initrd: cpio/gzip failed")
        os.rename(path + ".tmp", path)
        shutil.rmtree(tmp)
        return path

    # ---------------------------------------------------------------- rootfs
    def rootfs(self, extra_packages=()):
        self.kernel()
        pkgs = sorted(set(BASE_PACKAGES) | set(extra_packages))
        key = key_of(ROOTFS_RECIPE, SUITE, MIRROR, self.kver, *pkgs)
        path = os.path.join(self.cache, f"rootfs-{key}")
        if os.path.exists(os.path.join(path, ".complete")):
            return path
        log(f"rootfs: mmdebstrap {SUITE} minbase + {' '.join(pkgs)} (~1 min)")
        t0 = time.monotonic()
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
            "--include=" + ",".join(pkgs),
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-include=/usr/share/locale/locale.alias",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            SUITE, tmp, MIRROR,
        ]
        run(cmd)
        # Guest kernel modules: only the ones the tests need.
        mdir = os.path.join(tmp, "lib", "modules", self.kver)
        for rel in self.module_files(GUEST_MODULES):
            dst = os.path.join(mdir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(os.path.join(self.kdir, "lib", "modules", self.kver, rel), dst)
        for f in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            src = os.path.join(self.kdir, "lib", "modules", self.kver, f)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(mdir, f))
        run(["depmod", "-b", tmp, self.kver])
        open(os.path.join(tmp, ".complete"), "w").close()
        os.rename(tmp, path)
        log(f"rootfs: done in {time.monotonic() - t0:.0f} s")
        return path

    def all(self, extra_packages=()):
        k = self.kernel()
        i = self.initrd()
        r = self.rootfs(extra_packages)
        return k, i, r
