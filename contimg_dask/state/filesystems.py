"""Which file system a path lives on (Linux ``/proc/self/mountinfo``): SQLite's locking is
unreliable on network file systems, so the SQLite store refuses them."""

from __future__ import annotations

from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

#: File system types on which SQLite's POSIX locks and WAL shared memory cannot be trusted.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "lustre", "gpfs",
    "ceph", "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse",
    "fuse.rclone", "beegfs", "pvfs2", "orangefs", "davfs", "fuse.davfs2",
})


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.encode().decode("unicode_escape")


def filesystem_type(path: Path, mountinfo: str | None = None) -> str:
    """The type of the file system holding ``path`` (its nearest existing ancestor): the
    mount point that is the longest prefix of the resolved path wins. ``mountinfo`` is the
    text of ``/proc/self/mountinfo`` (read when None); ``unknown`` if it cannot be read."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return "unknown"
    target = path.expanduser().absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    best, best_type = "", "unknown"
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mount_point = _unescape(fields[4])
        inside = target == Path(mount_point) or Path(mount_point) in target.parents
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, right.split()[0]
    return best_type


def is_network_filesystem(fstype: str) -> bool:
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs")
