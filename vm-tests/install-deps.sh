#!/usr/bin/env bash
# Install the host tools the VM tests need (Debian 12 host). Idempotent: does nothing when
# everything is present. QEMU comes from bookworm-backports (the host's qemu-utils is from there,
# and bookworm's QEMU 7.2 conflicts with it). The backports suite is added through a private apt
# sources directory, so /etc/apt is never modified.
#
# Also installs cargo-deb (to build the .deb) unless STOKE_NO_CARGO_DEB=1.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have qemu-system-x86_64 || need_pkgs+=(qemu-system-x86)
have mmdebstrap        || need_pkgs+=(mmdebstrap)
[ -x /bin/busybox ]    || need_pkgs+=(busybox-static)
have mkfs.vfat         || need_pkgs+=(dosfstools)
have mcopy             || need_pkgs+=(mtools)
have genisoimage       || need_pkgs+=(genisoimage)
have cpio              || need_pkgs+=(cpio)
have depmod            || need_pkgs+=(kmod)
have mkfs.ext4         || need_pkgs+=(e2fsprogs)
have qemu-img          || need_pkgs+=(qemu-utils)
have python3           || need_pkgs+=(python3)
have zstd              || need_pkgs+=(zstd)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    parts=$(mktemp -d /tmp/stoke-apt-sources.XXXXXX)
    trap 'rm -rf "$parts"' EXIT
    # Keep the host's own sources, and add bookworm-backports from the same mirror.
    cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$parts"/ 2>/dev/null || true
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    [ -n "$mirror" ] || mirror=$(awk '/^deb .*debian/ && !/security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    cat > "$parts/stoke-backports.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_opts=(-o "Dir::Etc::SourceParts=$parts" -o Acquire::Retries=3)
    echo "install-deps: installing ${need_pkgs[*]}" >&2
    $SUDO apt-get "${apt_opts[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${apt_opts[@]}" install -y -q \
        --no-install-recommends -t bookworm-backports "${need_pkgs[@]}"
fi

if [ "${STOKE_NO_CARGO_DEB:-0}" != 1 ] && ! cargo deb --version >/dev/null 2>&1; then
    echo "install-deps: cargo install cargo-deb" >&2
    cargo install cargo-deb --locked
fi
echo "install-deps: ok" >&2
