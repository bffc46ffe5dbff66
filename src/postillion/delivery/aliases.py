"""Alias expansion: aliases(5) values for local(8), and virtual_alias_maps for the queue manager.

Owns: splitting an alias value into tokens (addresses, ``|command``, ``/file``,
``:include:``), the local(8) expansion tree (recursion, "alias includes its own name",
loops, duplicate elimination), and ``expand_virtual_aliases``, the cleanup(8)-style
virtual_alias_maps rewrite the queue manager calls before it routes a recipient.
Must not import: server, cli, queue (tables are passed in; no I/O besides table lookups).
Follows: Postfix local/alias.c, local/token.c, local/recipient.c (lookup order: the local part
with its extension, then without), global/mail_addr_map.c (``@domain`` results, extension
propagation), cleanup/cleanup_map1n.c (virtual_alias_recursion_limit,
virtual_alias_expansion_limit, "an address may expand into itself").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from postillion.errors import PostillionError
from postillion.tables import TableList, mail_addr_keys, split_address, strip_extension

ALIAS_DEPTH_LIMIT = 100  # local/alias.c: "if (state.level > 100)" -> alias database loop
EXPANSION_LIMIT = 1000  # duplicate_filter_limit default: members of one expansion


@dataclass(frozen=True, slots=True)
class Token:
    """One item of an alias value: kind is "address", "command", "file" or "include"."""

    kind: str
    value: str


def split_alias_value(value: str) -> list[str]:
    """Split at commas outside quotes and angle brackets; ``"|cmd arg"`` stays one item."""
    items: list[str] = []
    buf: list[str] = []
    quoted = False
    angle = 0
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            buf.append(value[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "<":
            angle += 1
        elif not quoted and c == ">" and angle:
            angle -= 1
        elif not quoted and not angle and c == ",":
            items.append("".join(buf))
            buf = []
            i += 1
            continue
        buf.append(c)
        i += 1
    items.append("".join(buf))
    return [item.strip() for item in items if item.strip()]


def parse_alias_value(value: str) -> list[Token]:
    """aliases(5) right-hand side -> tokens, classified like local/token.c deliver_token()."""
    tokens = []
    for item in split_alias_value(value):
        if "<" in item and item.endswith(">") and not item.startswith(('"', "|")):
            item = item[item.rfind("<") + 1:-1].strip()  # "Name <addr>" -> addr
        if len(item) >= 2 and item.startswith('"') and item.endswith('"'):
            item = item[1:-1].replace('\\"', '"')
        if not item:
            continue
        if item.lower().startswith(":include:"):
            tokens.append(Token("include", item[len(":include:"):].strip()))
        elif item.startswith("|"):
            tokens.append(Token("command", item[1:].strip()))
        elif item.startswith("/"):
            tokens.append(Token("file", item))
        else:
            tokens.append(Token("address", item))
    return tokens


@dataclass(frozen=True, slots=True)
class Leaf:
    """Where one member of an expansion ends up.

    kind: "mailbox" (a local user: ``user`` without extension, ``extension``),
    "forward" (a non-local address), "command" / "file" (``target`` is the command or the
    path; ``address`` the alias that listed it, as Postfix logs it; ``source`` the file of
    the alias table, whose owner's rights the delivery uses), or "failed" (``dsn`` and
    ``text`` say why).  ``address`` is the member address; ``via`` is the alias chain.
    """

    kind: str
    address: str
    user: str = ""
    extension: str | None = None
    dsn: str = ""
    text: str = ""
    via: tuple[str, ...] = ()
    target: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class LocalNaming:
    """What local(8) needs to know about names: which domains are local, the origin
    appended to bare names in alias values, and the recipient delimiter."""

    is_local_domain: Callable[[str], Awaitable[bool]]
    myorigin: str
    recipient_delimiter: str = ""
    propagate_extension: bool = False  # propagate_unmatched_extensions lists "alias"

    def canonical(self, address: str) -> str:
        """A bare name in an alias value gets ``@$myorigin`` (trivial-rewrite's rule)."""
        return address if "@" in address else f"{address}@{self.myorigin}"


async def expand_local(address: str, aliases: TableList, naming: LocalNaming) -> list[Leaf]:
    """Expand one local(8) recipient through ``alias_maps`` into its leaves.

    Follows local(8): an alias is looked up with the local part (lower case) including its
    extension, then without; an alias that lists its own name delivers that name to the
    user's mailbox; ``\\name`` is never expanded; members in other domains are forwarded;
    ``|command`` and ``/file`` members become "command" and "file" leaves (the agent decides
    with allow_mail_to_commands / allow_mail_to_files); ``:include:`` files are refused with
    Postfix's "mail to file is restricted".  A name that reappears deeper in its own
    expansion is an alias loop ("5.4.6 alias database loop for NAME").  Duplicate leaves are
    dropped, so a mailbox reached twice gets one copy.  TableLookupError propagates.
    """
    leaves: list[Leaf] = []
    seen: set[tuple[str, str]] = set()

    def add(leaf: Leaf) -> None:
        key = (leaf.kind, leaf.user if leaf.kind == "mailbox" else
               leaf.target if leaf.kind in ("command", "file") else leaf.address.lower())
        if leaf.kind == "failed" or key not in seen:
            seen.add(key)
            leaves.append(leaf)

    async def walk(addr: str, via: tuple[str, ...], exp_from: str | None) -> None:
        if len(leaves) >= EXPANSION_LIMIT:
            add(Leaf("failed", addr, dsn="4.3.0", text="alias expansion too large", via=via))
            return
        literal = addr.startswith("\\")
        if literal:
            addr = addr[1:]
        local, domain = split_address(addr)
        if domain and not await naming.is_local_domain(domain):
            add(Leaf("forward", addr, via=via))
            return
        local = local.lower()
        bare = strip_extension(local, naming.recipient_delimiter)
        user = bare if bare is not None else local
        extension = local[len(bare):] if bare is not None else None
        if not literal:
            for name in [local] if bare is None else [local, bare]:
                if exp_from is not None and name == exp_from:
                    break  # "alias includes its own name": deliver to the user instead
                if name in via or len(via) >= ALIAS_DEPTH_LIMIT:
                    add(Leaf("failed", addr, dsn="5.4.6",
                             text=f"alias database loop for {name}", via=via))
                    return
                value, source = await _lookup(aliases, name)
                if value is None:
                    continue
                tokens = parse_alias_value(value)
                if not tokens:
                    add(Leaf("failed", addr, dsn="4.3.0", text="alias database unavailable",
                             via=via + (name,)))
                    return
                # local/resolve.c: an extension the alias name did not match goes onto each
                # member address that has none of its own, when "alias" is propagated
                unmatched = extension if (name == bare and naming.propagate_extension) else None
                for token in tokens:
                    chain = via + (name,)
                    if token.kind == "address":
                        member = token.value
                        target = ("\\" + naming.canonical(member[1:]) if member.startswith("\\")
                                  else naming.canonical(member))
                        if unmatched:
                            target = _with_extension(target, unmatched, naming.recipient_delimiter)
                        await walk(target, chain, name)
                    elif token.kind in ("command", "file"):
                        add(Leaf(token.kind, addr, user=user, target=token.value,
                                 source=source, via=chain))
                    else:  # :include: files are not read (yet)
                        add(Leaf("failed", token.value, dsn="5.7.1",
                                 text="mail to file is restricted", via=chain))
                return
        add(Leaf("mailbox", addr, user=user, extension=extension, via=via))

    await walk(address, (), None)
    return leaves


def _with_extension(address: str, extension: str, delimiters: str) -> str:
    """``bob@x`` + ``+foo`` -> ``bob+foo@x``; an address with an extension keeps its own."""
    prefix = "\\" if address.startswith("\\") else ""
    local, _, domain = address[len(prefix):].rpartition("@")
    if strip_extension(local, delimiters) is not None:
        return address
    return f"{prefix}{local}{extension}@{domain}"


async def _lookup(aliases: TableList, name: str) -> tuple[str | None, str]:
    """The value for ``name`` and the file of the table that had it ("" when not a file)."""
    for table in getattr(aliases, "tables", [aliases]):
        value = await table.lookup(name)
        if value is not None:
            return value, str(getattr(table, "path", "") or "")
    return None, ""


class VirtualAliasError(PostillionError):
    """virtual_alias_maps expansion hit a limit; the message must be deferred (cleanup says
    "message not accepted" and answers 451 4.3.0)."""

    temporary = True

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


async def map_address(
    maps: TableList, address: str, *, recipient_delimiter: str = "",
    is_local_domain: Callable[[str], Awaitable[bool]] | None = None, myorigin: str = "",
    propagate_extension: bool = True,
) -> list[str] | None:
    """Postfix mail_addr_map(): one lookup of ``address`` -> its addresses, None on no match.

    Keys are tried in mail_addr_find() order.  A result ``@domain`` gets the original local
    part (without extension); when only the extension-less key matched, the extension is
    appended to each result's local part (``propagate_unmatched_extensions`` has "virtual").
    """
    local, domain = split_address(address)
    keys = mail_addr_keys(address, recipient_delimiter=recipient_delimiter,
                          local_domain=(await is_local_domain(domain) if is_local_domain
                                        else False) if domain else True)
    bare = strip_extension(local.lower(), recipient_delimiter)
    for key in keys:
        value = await maps.lookup(key)
        if value is None:
            continue
        matched_bare = bare is not None and key in (f"{bare}@{domain.lower()}", bare)
        extension = local[len(bare):] if matched_bare and bare is not None else None
        value = value.strip()
        if value.startswith("@"):
            value = (local[: len(bare)] if extension and bare is not None else local) + value
        out = []
        for item in split_alias_value(value.replace(" ", ",").replace("\t", ",")):
            if "@" not in item and myorigin:
                item = f"{item}@{myorigin}"
            if extension and propagate_extension:
                lp, at, dom = item.rpartition("@")
                item = f"{lp}{extension}@{dom}" if at else item + extension
            out.append(item)
        return out
    return None


async def expand_virtual_aliases(
    address: str, maps: TableList, *, recipient_delimiter: str = "",
    is_local_domain: Callable[[str], Awaitable[bool]] | None = None, myorigin: str = "",
    propagate_extension: bool = True, recursion_limit: int = 1000, expansion_limit: int = 1000,
) -> list[str] | None:
    """Rewrite one recipient through ``virtual_alias_maps``; None when nothing matched.

    The queue manager calls this before routing and replaces the recipient with the
    returned list (duplicates removed, case-insensitively, first spelling kept).  As in
    cleanup_map1n.c each address is expanded again until it no longer matches or expands
    into itself; more than ``recursion_limit`` rounds (a loop such as a -> b -> a) or more
    than ``expansion_limit`` addresses raise VirtualAliasError with Postfix's texts.
    TableLookupError propagates (defer the message).
    """
    if not maps:
        return None
    argv = [address]
    done: set[str] = set()
    matched = False
    arg = 0
    while arg < len(argv):
        count = 0
        while True:
            if len(argv) > expansion_limit:
                raise VirtualAliasError(
                    f"unreasonable virtual_alias_maps map expansion size for {address}")
            current = argv[arg]
            if current.lower() in done:
                break
            if count >= recursion_limit:
                raise VirtualAliasError(
                    f"unreasonable virtual_alias_maps map nesting for {address}")
            result = await map_address(
                maps, current, recipient_delimiter=recipient_delimiter,
                is_local_domain=is_local_domain, myorigin=myorigin,
                propagate_extension=propagate_extension)
            if not result:
                break
            matched = True
            for i, new in enumerate(result):
                if i == 0:
                    argv[arg] = new
                else:
                    argv.append(new)
                if new.lower() == current.lower():
                    done.add(current.lower())  # "allow an address to expand into itself once"
            count += 1
        arg += 1
    if not matched:
        return None
    out: list[str] = []
    seen: set[str] = set()
    for a in argv:
        if a.lower() not in seen:
            seen.add(a.lower())
            out.append(a)
    return out

