"""The guest root image of one test run: cached rootfs + test plumbing + the current stoke."""

import glob
import tempfile
import os
import shutil
import subprocess
import time
import uuid

from .build import GUEST, REPO, log, out, run

IMAGE_HOSTNAME = "baked-image"


def find_stoke_binary():
    """The stoke binary to test: $STOKE_BIN, else target/debug/stoke, else target/release/stoke."""
    env = os.environ.get("STOKE_BIN")
    if env:
        return env
    cands = [os.path.join(REPO, "target", p, "stoke") for p in ("debug", "release")]
    cands = [c for c in cands if os.path.exists(c)]
    if not cands:
        return None
    return max(cands, key=os.path.getmtime)


def build_deb(binary, outdir):
    """A .deb of `binary` with cargo-deb (no compilation). Returns its path, or None without cargo-deb."""
    if subprocess.run(["cargo", "deb", "--version"], capture_output=True).returncode != 0:
        return None
    # cargo-deb takes the binary from $CARGO_TARGET_DIR/release/: stage a stripped copy there, so
    # the shared target/ is never touched and the .deb stays small and quick to compress (a debug
    # binary carries hundreds of MB of debug info).
    stage = os.path.join(outdir, "stage")
    os.makedirs(os.path.join(stage, "release"), exist_ok=True)
    staged = os.path.join(stage, "release", "stoke")
    if subprocess.run(["strip", "-o", staged, binary], capture_output=True).returncode != 0:
        shutil.copy(binary, staged)
    args = ["cargo", "deb", "--no-build", "--no-strip", "--fast", "-o", outdir]
    env = dict(os.environ, CARGO_TARGET_DIR=stage)
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        log(f"cargo deb failed, installing the binary and units by hand:\n{res.stderr.strip()}")
        return None
    debs = sorted(glob.glob(os.path.join(outdir, "stoke_*.deb")), key=os.path.getmtime)
    return debs[-1] if debs else None


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def chroot(root, *cmd):
    return run(["chroot", root, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def build_root_image(rootfs, workdir, binary, size="3G", name="root.img", agent="stoke",
                     tweak=None, progress=False):
    """Copies the cached rootfs, installs stoke (agent="stoke") or nothing else (agent="none", or
    "cloud-init" for a rootfs that has it), the check unit, and makes an ext4 image with mkfs -d.
    progress: the guest prints progress lines on the console until its checks start (the tests
    want them when a boot times out; the bench does not want their load)."""
    t0 = time.monotonic()
    tree = os.path.join(workdir, name + ".tree")
    shutil.rmtree(tree, ignore_errors=True)
    run(["cp", "-a", "--reflink=auto", rootfs, tree])
    os.remove(os.path.join(tree, ".complete"))

    # Identity of the baked image: a recognisable hostname, no host keys (the agent makes them
    # before ssh.service), an empty machine-id (first boot semantics, as a real baked image).
    write(os.path.join(tree, "etc/hostname"), IMAGE_HOSTNAME + "\n")
    write(os.path.join(tree, "etc/hosts"),
          f"127.0.0.1\tlocalhost\n127.0.1.1\t{IMAGE_HOSTNAME}\n::1\tlocalhost ip6-localhost\n")
    for k in glob.glob(os.path.join(tree, "etc/ssh/ssh_host_*")):
        os.remove(k)
    write(os.path.join(tree, "etc/machine-id"), "")
    write(os.path.join(tree, "etc/fstab"), "LABEL=root / ext4 rw,errors=remount-ro 0 1\n")

    # The image's login account (like Debian's cloud images); stoke's default_user.
    chroot(tree, "useradd", "-m", "-s", "/bin/bash", "-G", "users", "admin")

    # Network: systemd-networkd, DHCP on the one NIC; network-online.target waits for it.
    shutil.copy(os.path.join(GUEST, "50-dhcp.network"),
                os.path.join(tree, "etc/systemd/network/50-dhcp.network"))
    # On first boot (empty machine-id) systemd applies presets: keep wait-online enabled.
    write(os.path.join(tree, "etc/systemd/system-preset/10-stoke-vm-tests.preset"),
          "enable systemd-networkd.service\nenable systemd-networkd-wait-online.service\n"
          "enable stoke-check.service\n")
    # The check unit that reports on ttyS0 and powers off.
    shutil.copy(os.path.join(GUEST, "stoke-check"), os.path.join(tree, "usr/local/sbin/stoke-check"))
    shutil.copy(os.path.join(GUEST, "stoke-check.service"),
                os.path.join(tree, "etc/systemd/system/stoke-check.service"))
    run(["systemctl", "--root", tree, "-q", "enable", "systemd-networkd.service",
         "systemd-networkd-wait-online.service", "stoke-check.service"])
    if progress:
        shutil.copy(os.path.join(GUEST, "stoke-progress"),
                    os.path.join(tree, "usr/local/sbin/stoke-progress"))
        shutil.copy(os.path.join(GUEST, "stoke-progress.service"),
                    os.path.join(tree, "etc/systemd/system/stoke-progress.service"))
        run(["systemctl", "--root", tree, "-q", "enable", "stoke-progress.service"])
    # Quiet, quick boots: no login prompt on the test console, no timers.
    run(["systemctl", "--root", tree, "-q", "mask", "serial-getty@ttyS0.service", "getty@tty1.service",
         "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
         "fstrim.timer", "e2scrub_reap.service", "puppet.service"])

    installed = None
    if agent == "stoke":
        installed = install_stoke(tree, workdir, binary)
    if tweak:
        tweak(tree)

    img = os.path.join(workdir, name)
    if os.path.exists(img):
        os.remove(img)
    run(["truncate", "-s", size, img])
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-E", "root_owner=0:0", "-d", tree, img])
    shutil.rmtree(tree)
    log(f"{name}: built in {time.monotonic() - t0:.0f} s ({installed or agent})")
    return img


def install_stoke(tree, workdir, binary):
    deb = None
    if os.environ.get("STOKE_VM_NO_DEB") != "1":
        deb = build_deb(binary, os.path.join(workdir, "deb"))
    if deb:
        shutil.copy(deb, os.path.join(tree, "tmp/stoke.deb"))
        res = subprocess.run(["chroot", tree, "dpkg", "-i", "/tmp/stoke.deb"],
                             capture_output=True, text=True)
        os.remove(os.path.join(tree, "tmp/stoke.deb"))
        if res.returncode != 0:
            raise RuntimeError(f"dpkg -i {deb} in the guest tree failed:\n{res.stdout}{res.stderr}")
        # The package must have enabled its units (postinst); the tests check that they run.
        return f"installed {os.path.basename(deb)}"
    # Without cargo-deb: the same files, by hand, then the package's postinst.
    pk = os.path.join(REPO, "packaging")
    shutil.copy(binary, os.path.join(tree, "usr/bin/stoke"))
    subprocess.run(["strip", os.path.join(tree, "usr/bin/stoke")], capture_output=True)
    for u in glob.glob(os.path.join(pk, "systemd", "*")):
        shutil.copy(u, os.path.join(tree, "lib/systemd/system", os.path.basename(u)))
    os.makedirs(os.path.join(tree, "etc/stoke"), exist_ok=True)
    shutil.copy(os.path.join(pk, "etc/stoke.yaml"), os.path.join(tree, "etc/stoke/stoke.yaml"))
    shutil.copy(os.path.join(pk, "debian/postinst"), os.path.join(tree, "tmp/postinst"))
    chroot(tree, "sh", "/tmp/postinst", "configure")
    os.remove(os.path.join(tree, "tmp/postinst"))
    return "installed binary + units (no cargo-deb)"


def known_modules(binary):
    """Which modules this stoke has: `stoke --root <scratch> plan` lists one line per module
    ("<stage> <module> <verdict> ..."); falls back to the crates in src/registry.rs."""
    with tempfile.TemporaryDirectory() as root:
        res = subprocess.run([binary, "--root", root, "plan"], capture_output=True, text=True,
                             timeout=60)
    mods = []
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("local", "network", "final") and parts[1] not in mods:
            mods.append(parts[1])
    if mods:
        return sorted(mods)
    try:
        reg = open(os.path.join(REPO, "src", "registry.rs")).read()
    except OSError:
        return []
    found = []
    for crate, names in (("stoke_hostname", ["hostname"]), ("stoke_disks", ["disks"]),
                         ("stoke_mounts", ["mounts"]),
                         ("stoke_ssh", ["ssh-host-keys", "ssh-authorized-keys"]),
                         ("stoke_route53", ["route53"]), ("stoke_puppet", ["puppet"])):
        if crate + "::" in reg:
            found += names
    return found
