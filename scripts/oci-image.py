#!/usr/bin/env python3
"""Write a container image as an OCI image-layout tar, without Docker or a registry.

    oci-image.py --name localhost/rtcd-rs/rtcd:0.1.0 --out rtcd.tar \
        --layer base-rootfs/ --layer app-rootfs/ --dockerfile Dockerfile.rtcd
    oci-image.py --name ... --layer dir/ --entrypoint '["/bin/sleep","2147483647"]' --user 65532:65532

Each --layer is a directory, written as one uncompressed tar layer: entries sorted, mtime 0,
owner root unless --owner PATH=UID:GID says otherwise (PATH relative to the layer root, applies to
that path and below). The image config comes from --dockerfile (ENTRYPOINT, CMD, USER, WORKDIR,
ENV, EXPOSE and LABEL of the final stage, the same image the Dockerfile describes) and/or the
explicit flags, which win. The tar holds oci-layout, index.json (annotated with
io.containerd.image.name, which `ctr images import` names the image by), the manifest, the config
and the layer blobs. Prints the manifest digest.
"""
import argparse
import hashlib
import io
import json
import os
import shlex
import sys
import tarfile


def dockerfile_config(path):
    """The final stage's runtime instructions of a Dockerfile."""
    stage, joined = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                joined += line[:-1] + " "
                continue
            joined += line
            if joined.strip():
                if joined.split()[0].upper() == "FROM":
                    stage = []
                stage.append(joined.strip())
            joined = ""
    cfg = {}
    for ins in stage:
        word, _, rest = ins.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word in ("ENTRYPOINT", "CMD"):
            cfg[word.capitalize() if word == "CMD" else "Entrypoint"] = (
                json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest])
        elif word == "USER":
            cfg["User"] = rest
        elif word == "WORKDIR":
            cfg["WorkingDir"] = rest
        elif word == "ENV":
            env = cfg.setdefault("Env", [])
            for kv in shlex.split(rest):
                if "=" not in kv:
                    sys.exit(f"oci-image: {path}: ENV {kv!r} is not KEY=VALUE")
                key = kv.split("=", 1)[0]
                env[:] = [e for e in env if not e.startswith(key + "=")] + [kv]
        elif word == "EXPOSE":
            ports = cfg.setdefault("ExposedPorts", {})
            for p in rest.split():
                ports[p if "/" in p else p + "/tcp"] = {}
        elif word == "LABEL":
            labels = cfg.setdefault("Labels", {})
            for kv in shlex.split(rest):
                k, _, v = kv.partition("=")
                labels[k] = v
    return cfg


def layer_tar(root, owners):
    """An uncompressed, reproducible tar of the directory ROOT."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for n in sorted(dirnames + filenames):
                paths.append(os.path.join(dirpath, n))
        for p in sorted(paths, key=lambda x: os.path.relpath(x, root)):
            rel = os.path.relpath(p, root)
            info = tar.gettarinfo(p, arcname=rel)
            info.mtime = 0
            info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
            for prefix, (uid, gid) in owners.items():
                if rel == prefix or rel.startswith(prefix + "/"):
                    info.uid, info.gid = uid, gid
            if info.isreg():
                with open(p, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name")
    ap.add_argument("--out")
    ap.add_argument("--field", help="print this config field of --dockerfile and exit")
    ap.add_argument("--layer", action="append", default=[])
    ap.add_argument("--owner", action="append", default=[], help="PATH=UID:GID")
    ap.add_argument("--dockerfile")
    ap.add_argument("--entrypoint")
    ap.add_argument("--cmd")
    ap.add_argument("--user")
    ap.add_argument("--workdir")
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--arch", default="amd64")
    a = ap.parse_args()

    cfg = dockerfile_config(a.dockerfile) if a.dockerfile else {}
    if a.field:
        v = cfg.get(a.field, "")
        print(v[0] if isinstance(v, list) else v)
        return
    if not a.name or not a.out:
        ap.error("--name and --out are required")
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user:
        cfg["User"] = a.user
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    env = cfg.setdefault("Env", [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.extend(a.env)

    owners = {}
    for o in a.owner:
        path, _, ids = o.partition("=")
        uid, _, gid = ids.partition(":")
        owners[path.strip("/")] = (int(uid), int(gid or uid))

    blobs = {}

    def blob(data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layers, diff_ids = [], []
    for d in a.layer:
        if not os.path.isdir(d):
            sys.exit(f"oci-image: --layer {d}: not a directory")
        data = layer_tar(d, owners)
        desc = blob(data, "application/vnd.oci.image.layer.v1.tar")
        layers.append(desc)
        diff_ids.append(desc["digest"])
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": a.arch,
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/oci-image.py"}
                    for _ in diff_ids],
    }
    cdesc = blob(json.dumps(config, sort_keys=True, separators=(",", ":")).encode(),
                 "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cdesc, "layers": layers}
    mdesc = blob(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(),
                 "application/vnd.oci.image.manifest.v1+json")
    tag = a.name.rsplit(":", 1)[1] if ":" in a.name.rsplit("/", 1)[-1] else "latest"
    mdesc["annotations"] = {"io.containerd.image.name": a.name, "org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [mdesc]}

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            out.addfile(info, io.BytesIO(data))
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            out.addfile(info)
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in sorted(blobs.items()):
            add("blobs/sha256/" + digest.split(":", 1)[1], data)
    os.replace(tmp, a.out)
    print(mdesc["digest"])


if __name__ == "__main__":
    main()
