#!/usr/bin/env python3
"""Build the blog example's two images offline, as one OCI layout tar for `crib image import`.

    .venv/bin/python examples/blog_images.py /tmp/blog-images.tar

Both images are busybox (Debian's busybox-static, as in busybox_image.py) plus a small application layer:

* example.com/blog-db:1 is a database-like server: a line protocol on TCP port 3306 (`ADD table text`,
  `LIST table`, `COUNT table`), one file per table under /var/lib/kvdb, served by `nc -ll -e`.
  `kvdb LIST posts` queries it from inside the container.
* example.com/blog-web:1 is a web server: busybox httpd on port 8080 with two CGI programs that talk to
  the database over 127.0.0.1 (the pod's shared loopback), as WordPress talks to MySQL:
  /cgi-bin/blog renders the posts, /cgi-bin/post?TEXT adds one.

No registry and no network are needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.images import busybox_layer, host_platform
from tests.fixtures.oci import DEFAULT_PATH_ENV, ImageConfig, Layer, build_image, write_oci_layout_tar

WEB = "example.com/blog-web:1"
DB = "example.com/blog-db:1"

KVDB_SERVER = """#!/bin/sh
# A database-like server: one connection = one query line, answered by kvdb-query.
mkdir -p "$KVDB_DATA"
echo "kvdb: serving $KVDB_DATA on port $KVDB_PORT"
exec nc -ll -p "$KVDB_PORT" -e /usr/local/bin/kvdb-query
"""

KVDB_QUERY = """#!/bin/sh
# One query: ADD <table> <text...> | LIST <table> | COUNT <table>. Tables are files of lines.
read -r verb table rest
case "$table" in ''|*[!a-z0-9_]*) echo "ERR bad table name"; exit 0 ;; esac
file="$KVDB_DATA/$table"
case "$verb" in
  ADD) printf '%s\\n' "$rest" >> "$file"; echo "OK"; echo "kvdb: ADD $table" >&2 ;;
  LIST) [ -f "$file" ] && cat "$file"; echo "kvdb: LIST $table" >&2 ;;
  COUNT) if [ -f "$file" ]; then wc -l < "$file"; else echo 0; fi ;;
  *) echo "ERR unknown verb $verb" ;;
esac
"""

KVDB_CLIENT = """#!/bin/sh
# kvdb VERB TABLE [TEXT...]: one query to the server on 127.0.0.1.
echo "$*" | nc 127.0.0.1 "${KVDB_PORT:-3306}"
"""

BLOG_CGI = """#!/bin/sh
printf 'Content-Type: text/html\\r\\n\\r\\n'
echo "<html><body><h1>$BLOG_TITLE</h1><ul>"
echo "LIST posts" | nc 127.0.0.1 "$DB_PORT" | while read -r line; do echo "<li>$line</li>"; done
echo "</ul><p>served by $(hostname)</p></body></html>"
echo "blog: page served" >&2
"""

POST_CGI = """#!/bin/sh
text=$(httpd -d "$QUERY_STRING")
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo "ADD posts $text" | nc 127.0.0.1 "$DB_PORT"
echo "blog: new post" >&2
"""

INDEX = """<html><body><a href="/cgi-bin/blog">the blog</a></body></html>
"""


def images() -> dict[str, object]:
    platform = host_platform()
    db_layer = (Layer(comment="kvdb").file("/usr/local/bin/kvdb-server", KVDB_SERVER, mode=0o755)
                .file("/usr/local/bin/kvdb-query", KVDB_QUERY, mode=0o755)
                .file("/usr/local/bin/kvdb", KVDB_CLIENT, mode=0o755)
                .dir("/var/lib/kvdb"))
    db = build_image([busybox_layer(hardlink_applets=True), db_layer], platform=platform, spec=ImageConfig(
        env=(DEFAULT_PATH_ENV, "KVDB_DATA=/var/lib/kvdb", "KVDB_PORT=3306"),
        cmd=("/usr/local/bin/kvdb-server",), exposed_ports=("3306/tcp",)))
    web_layer = (Layer(comment="blog").file("/srv/www/index.html", INDEX)
                 .file("/srv/www/cgi-bin/blog", BLOG_CGI, mode=0o755)
                 .file("/srv/www/cgi-bin/post", POST_CGI, mode=0o755))
    web = build_image([busybox_layer(hardlink_applets=True), web_layer], platform=platform, spec=ImageConfig(
        env=(DEFAULT_PATH_ENV, "DB_PORT=3306", "BLOG_TITLE=A blog on crib"),
        cmd=("httpd", "-f", "-v", "-p", "8080", "-h", "/srv/www"), exposed_ports=("8080/tcp",)))
    return {WEB: web, DB: db}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="the OCI layout tar to write")
    args = parser.parse_args()
    built = images()
    write_oci_layout_tar(args.dest, built)  # type: ignore[arg-type]
    for name, image in built.items():
        print(f"wrote {args.dest}: {name} (image id {image.image_id})")  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
