#!/usr/bin/env python3
"""Builds a busybox OCI image from Debian's busybox-static, without a registry.

  build-image.py --ref REF --out image.tar [--pause]   an OCI image archive for `ctr images import`
  build-image.py --rootfs DIR                          just the root filesystem, for bundle tests

The layer is reproducible: sorted names, mtime 0, uid/gid 0. With --pause the image's entrypoint is a
script that sleeps until SIGTERM and then exits 0 (a Kubernetes pause container).

Extra entries (for the escape tests' hostile image), each option repeatable:
  --add PATH=SOURCE[:MODE]        a file copied from SOURCE (mode in octal, default 0755)
  --symlink PATH=TARGET           a symbolic link
  --device PATH=c|b:MAJOR:MINOR   a character or block device node
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"
PAUSE_SCRIPT = b"""#!/bin/sh
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


def rootfs_entries(pause):
    """(path, kind, data) for every file of the image: kind is dir, file, exec or link."""
    applets = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    entries = {}
    for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root", "var", "home"]:
        entries[d] = ("dir", None)
    with open(BUSYBOX, "rb") as f:
        entries["bin/busybox"] = ("exec", f.read())
    for applet in applets:
        if applet != "bin/busybox":
            entries[applet] = ("link", "/bin/busybox")
    entries["etc/passwd"] = ("file", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    entries["etc/group"] = ("file", b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    if pause:
        entries["pause"] = ("exec", PAUSE_SCRIPT)
    return entries


def layer_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(entries):
            kind, data = entries[path]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if path == "tmp" else 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = data
                info.mode = 0o777
                tar.addfile(info)
            elif kind == "device":
                device_type, major, minor = data
                info.type = tarfile.CHRTYPE if device_type == "c" else tarfile.BLKTYPE
                info.devmajor, info.devminor = major, minor
                info.mode = 0o666
                tar.addfile(info)
            elif kind == "file-mode":
                mode, content = data
                info.mode = mode
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.mode = 0o755 if kind == "exec" else 0o644
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_rootfs(entries, root):
    os.makedirs(root, exist_ok=True)
    for path in sorted(entries):
        kind, data = entries[path]
        full = os.path.join(root, path)
        if kind == "dir":
            os.makedirs(full, exist_ok=True)
            os.chmod(full, 0o1777 if path == "tmp" else 0o755)
        elif kind == "link":
            if not os.path.lexists(full):
                os.symlink(data, full)
        elif kind == "device":
            device_type, major, minor = data
            kind_bits = stat.S_IFCHR if device_type == "c" else stat.S_IFBLK
            if not os.path.lexists(full):
                os.mknod(full, kind_bits | 0o666, os.makedev(major, minor))
        elif kind == "file-mode":
            mode, content = data
            with open(full, "wb") as f:
                f.write(content)
            os.chmod(full, mode)
        else:
            with open(full, "wb") as f:
                f.write(data)
            os.chmod(full, 0o755 if kind == "exec" else 0o644)


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}", len(data)


def write_image(entries, ref, out, pause):
    layer = layer_tar(entries)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    layer_gz = gzip.compress(layer, mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": None if pause else ["sh"],
            "Entrypoint": ["/pause"] if pause else None,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        layer_digest, layer_size = blob(tar, layer_gz)
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest, config_size = blob(tar, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
            }],
        }
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", json.dumps(index).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", help="image name, e.g. localhost/myshim/busybox:latest")
    parser.add_argument("--out", help="image archive to write")
    parser.add_argument("--rootfs", help="write the root filesystem into this directory instead")
    parser.add_argument("--pause", action="store_true", help="a pause image (entrypoint /pause)")
    parser.add_argument("--add", action="append", default=[], metavar="PATH=SOURCE[:MODE]")
    parser.add_argument("--symlink", action="append", default=[], metavar="PATH=TARGET")
    parser.add_argument("--device", action="append", default=[], metavar="PATH=c|b:MAJOR:MINOR")
    args = parser.parse_args()
    if not os.path.exists(BUSYBOX):
        sys.exit(f"build-image: {BUSYBOX} is missing (install busybox-static)")
    entries = rootfs_entries(args.pause)
    for spec in args.add:
        path, source = spec.split("=", 1)
        source, _, mode = source.partition(":")
        with open(source, "rb") as f:
            entries[path.lstrip("/")] = ("file-mode", (int(mode or "755", 8), f.read()))
    for spec in args.symlink:
        path, target = spec.split("=", 1)
        entries[path.lstrip("/")] = ("link", target)
    for spec in args.device:
        path, node = spec.split("=", 1)
        device_type, major, minor = node.split(":")
        if device_type not in ("c", "b"):
            parser.error(f"--device {spec}: type must be c or b")
        entries[path.lstrip("/")] = ("device", (device_type, int(major), int(minor)))
    for path in list(entries):
        parent = os.path.dirname(path)
        while parent and parent not in entries:
            entries[parent] = ("dir", None)
            parent = os.path.dirname(parent)
    if args.rootfs:
        write_rootfs(entries, args.rootfs)
    elif args.ref and args.out:
        write_image(entries, args.ref, args.out, args.pause)
    else:
        parser.error("give --ref and --out, or --rootfs")


if __name__ == "__main__":
    main()
