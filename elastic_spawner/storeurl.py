"""One server's store URL from the operator's template: one prefix per user and server, never shared.

Used by the spawner (`ElasticSpawnerMixin.expanded_store_url`: where the server checkpoints) and
by the service (`service.checkpoints.server_store_url`: where it lists and prunes), so both
always name the same prefix.

`{servername}` of a user's default server is "default". JupyterHub also accepts "default" as
the *name* of a named server (any lowercase slug is valid), and a named server shares the
user's home, so both servers' notebooks have the same paths and the same kernel store keys. With
one prefix for both, the named server's checkpoints and background rounds landed in the default
server's kernel stores: a restore of one took the other's newer background round (the restore
follows the newest round after the pinned checkpoint), retention counted both servers'
checkpoints as one server's and deleted the other's. So the mapping is injective: a named
server whose name would collide ("default", or a name starting with the escape "~") gets "~"
in front of it.
"""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_SERVER = "default"
ESCAPE = "~"
_SAFE = "@.-_"


def servername_segment(servername: str) -> str:
    """`{servername}`, unescaped: "default" for the default server, a distinct string for every name."""
    if not servername:
        return DEFAULT_SERVER
    if servername == DEFAULT_SERVER or servername.startswith(ESCAPE):
        return ESCAPE + servername
    return servername


def expand_store_url(template: str, username: str, servername: str) -> str:
    """The store URL of `username`'s server `servername` ("" = default server), URL-escaped."""
    return template.format(username=quote(username, safe=_SAFE),
                           servername=quote(servername_segment(servername), safe=_SAFE + ESCAPE))
