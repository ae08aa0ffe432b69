"""The two-container pod of crictl's WordPress walkthrough, offline: busybox stand-ins for both images."""

from __future__ import annotations

import os
from pathlib import Path

from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.cri import Pod, container_config, pod_config, pull, wait_for
from tests.fixtures.daemon import CribDaemon


def test_two_container_pod_shares_network_and_ipc(crib: CribDaemon, images: img.Catalogue, session_tag: str,
                                                  tmp_path: Path) -> None:
    busybox = images.reference(img.BUSYBOX)
    pull(crib, busybox)
    (tmp_path / "db-data").mkdir()
    (tmp_path / "db-data" / "seed.sql").write_text("CREATE TABLE posts;\n")
    (tmp_path / "wp-content").mkdir()
    pod = Pod(crib, pod_config(session_tag, "wordpress", log_dir=tmp_path / "logs"))
    db = container_config(
        busybox, "mysql", log_path="mysql/0.log",
        command=["sh", "-c", 'while :; do echo "ready $MYSQL_DATABASE" | nc -l -p 3306; done'],
        envs=[api.KeyValue(key="MYSQL_DATABASE", value=b"wordpress")],
        mounts=[api.Mount(container_path="/var/lib/mysql", host_path=str(tmp_path / "db-data"),
                          readonly=True)])
    web = container_config(
        busybox, "wordpress", log_path="wordpress/0.log",
        command=["sh", "-c", 'echo "serving $WORDPRESS_DB_HOST"; exec sleep 1000'],
        envs=[api.KeyValue(key="WORDPRESS_DB_HOST", value=b"127.0.0.1:3306")],
        mounts=[api.Mount(container_path="/var/www/html/wp-content", host_path=str(tmp_path / "wp-content"))])
    try:
        db_id, web_id = pod.run(db), pod.run(web)
        assert {c.state for c in pod.rt.ListContainers(api.ListContainersRequest(
            filter=api.ContainerFilter(pod_sandbox_id=pod.id))).containers} == {api.CONTAINER_RUNNING}

        # One network namespace: the web container reaches the database on the pod's loopback.
        reply = wait_for(lambda: pod.exec(web_id, "sh", "-c", "nc 127.0.0.1 3306 < /dev/null").stdout,
                         timeout=10)
        assert reply == b"ready wordpress\n"
        # One IPC and network namespace, not the host's.
        ns = {kind: {pod.exec(c, "readlink", f"/proc/self/ns/{kind}").stdout for c in (db_id, web_id)}
              for kind in ("net", "ipc", "uts")}
        for kind, seen in ns.items():
            assert len(seen) == 1, kind
            assert seen.pop().strip().decode() != os.readlink(f"/proc/self/ns/{kind}")
        assert pod.exec(web_id, "hostname").stdout == b"wordpress\n"

        assert pod.exec(db_id, "cat", "/var/lib/mysql/seed.sql").stdout == b"CREATE TABLE posts;\n"
        assert pod.exec(db_id, "touch", "/var/lib/mysql/x").exit_code != 0  # read-only bind mount
        assert pod.exec(web_id, "sh", "-c", "echo theme > /var/www/html/wp-content/t").exit_code == 0
        assert (tmp_path / "wp-content" / "t").read_text() == "theme\n"

        logs = tmp_path / "logs"
        wait_for(lambda: "serving 127.0.0.1:3306" in (logs / "wordpress" / "0.log").read_text())
        assert (logs / "mysql" / "0.log").exists()
        assert pod.status(web_id).log_path == str(logs / "wordpress" / "0.log")
        mounts = {m.container_path: m for m in pod.status(db_id).mounts}
        assert mounts["/var/lib/mysql"].readonly
    finally:
        pod.remove()
    assert not pod.rt.ListContainers(api.ListContainersRequest()).containers
