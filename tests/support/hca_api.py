"""Drives the hca client's Python API (as its own integration tests do) against a dss
server: HCA_CONFIG_FILE and GOOGLE_APPLICATION_CREDENTIALS say where and who.

Usage: hca_api.py BUNDLE_UUID BUNDLE_VERSION FILE_UUID FILE_VERSION
Makes 25 collections of the bundle, then reads them back with get_collections.iterate()
and .paginate() (10 a page: the client re-sends its parameters on every Link URL),
patches one with add_contents (which the CLI cannot send), and iterates the aws event
streams. Prints one JSON document of what it saw.
"""
import itertools
import json
import sys
import uuid

from hca.dss import DSSClient

bundle, version, file_uuid, file_version = sys.argv[1:5]
client = DSSClient()
item = {"type": "bundle", "uuid": bundle, "version": version}
made = []
for i in range(25):
    u = str(uuid.uuid4())
    r = client.put_collection(uuid=u, version=version, replica="aws", name=f"c{i}",
                              description="paging", details={}, contents=[item])
    made.append({"uuid": r["uuid"], "version": r["version"]})

# As test_collections_iteration_pagination: at most 128 items or pages.
items = list(itertools.islice(client.get_collections.iterate(per_page=10), 128))
pages = list(itertools.islice(client.get_collections.paginate(per_page=10), 128))

added = {"type": "file", "uuid": file_uuid, "version": file_version}
patched = client.patch_collection(uuid=made[0]["uuid"], replica="aws", version=made[0]["version"],
                                  add_contents=[added, item], description="patched")
after = client.get_collection(uuid=made[0]["uuid"], replica="aws")

streams = list(itertools.islice(client.get_events.iterate(replica="aws", per_page=1), 10000))

print(json.dumps({
    "made": made,
    "items": items,
    "pages": [len(p["collections"]) for p in pages],
    "patched": patched,
    "after": after,
    "events": [e["event_id"] for s in streams for e in s["events"]],
}))
