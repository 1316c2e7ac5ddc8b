"""The NHI inventory beside a real directory: people from one, NHIs (owner checked) from the other.

The "real directory" here is a second sandbox file holding only people (plus one NHI of its own,
which the composite must never hand out): the composite cannot tell it from an IdP connector,
since both are only the Directory port.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from app.connectors.checks import CheckStatus
from app.connectors.inventory import DirectoryWithInventory
from app.connectors.sandbox import DirectoryFileError, SandboxDirectory, read_inventory
from app.domain import sod
from app.domain.errors import NotAllowed
from app.domain.models import Principal, PrincipalKind
from app.ports import Directory

DOCS = Path(__file__).resolve().parents[2] / "docs"

PEOPLE = """
people:
  - {id: alice, display_name: Alice Adams, email: alice@example.com, groups: [engineering]}
  - {id: bob, email: bob@example.com, groups: [helpdesk]}
  - {id: judy, email: judy@example.com, disabled: true}
nhis:
  - {name: legacy-token, owner: alice}   # the people directory's own NHI: never handed out
"""

INVENTORY = """
version: 1
nhis:
  - name: billing-api
    display_name: Billing API (AWS access key)
    owner: alice
    tags: [production]
    system: aws
  - {name: ci-deployer, owner: bob, tags: [ci], system: vault}
  - {name: orphan-key, owner: zoe, system: aws}        # nobody called zoe in the directory
  - {name: left-behind, owner: judy, system: vault}    # judy's account is disabled
  - {name: not-a-person, owner: legacy-token}          # an id that is not a person's
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(DirectoryFileError) as caught:
        read_inventory(text, "inventory.yaml")
    assert caught.value.source == "inventory.yaml"
    return [str(p) for p in caught.value.problems]


@pytest.fixture
def people() -> SandboxDirectory:
    return SandboxDirectory.from_yaml(PEOPLE, "people.yaml")


@pytest.fixture
def directory(people: SandboxDirectory) -> DirectoryWithInventory:
    return DirectoryWithInventory(
        people, read_inventory(INVENTORY, "inventory.yaml"), people_name="okta"
    )


class UnreachableDirectory:
    """A directory of people that cannot be reached (the IdP is down)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def find_by_email(self, email: str) -> list[Principal]:
        raise ConnectionError("down")

    async def get(self, principal_id: str) -> Principal | None:
        self.asked.append(principal_id)
        raise ConnectionError("down")

    async def find_nhi(self, name: str) -> Principal | None:
        raise ConnectionError("down")

    async def search(self, text: str, limit: int = 20) -> list[Principal]:
        raise ConnectionError("down")


# ---- NHIs from the inventory, owner vouched for by the directory -----------------------------


async def test_an_inventory_nhi_is_found_with_its_tags_system_and_owner(
    directory: DirectoryWithInventory,
) -> None:
    for spelling in ("billing-api", "nhi:billing-api"):
        nhi = await directory.find_nhi(spelling)
        assert nhi is not None
        assert (nhi.id, nhi.kind, nhi.name) == (
            "nhi:billing-api",
            PrincipalKind.NHI,
            "Billing API (AWS access key)",
        )
        assert (nhi.tags, nhi.system) == (frozenset({"production"}), "aws")
        assert nhi.owner_of_record == "alice"
    assert await directory.get("nhi:billing-api") == await directory.find_nhi("billing-api")


async def test_the_owner_is_the_directorys_own_id_for_the_person_written() -> None:
    """An owner written as a login resolves to the id chat users resolve to (an IdP's get
    accepts a login); twokey compares ids, so the written spelling must not survive."""
    people = SandboxDirectory.from_yaml(
        "people: [{id: 00ualice0001, email: alice@example.com}]", "people.yaml"
    )

    class ByLogin:
        """Okta-like: ``get`` by id or by login (email)."""

        async def find_by_email(self, email: str) -> list[Principal]:
            return await people.find_by_email(email)

        async def get(self, principal_id: str) -> Principal | None:
            found = await people.find_by_email(principal_id)
            return found[0] if len(found) == 1 else await people.get(principal_id)

        async def find_nhi(self, name: str) -> Principal | None:
            return None

        async def search(self, text: str, limit: int = 20) -> list[Principal]:
            return await people.search(text, limit)

    nhis = read_inventory("nhis: [{name: billing-api, owner: Alice@Example.com}]")
    directory = DirectoryWithInventory(ByLogin(), nhis)

    nhi = await directory.find_nhi("billing-api")
    assert nhi is not None and nhi.owner_id == "00ualice0001"


@pytest.mark.parametrize(
    ("name", "written", "problem"),
    [
        ("orphan-key", "zoe", "is not a person"),
        ("left-behind", "judy", "is a disabled account"),
        ("not-a-person", "legacy-token", "is not a person"),
    ],
)
async def test_an_owner_the_directory_cannot_vouch_for_leaves_no_owner_of_record(
    directory: DirectoryWithInventory, name: str, written: str, problem: str
) -> None:
    with capture_logs() as logs:
        nhi = await directory.find_nhi(name)

    assert nhi is not None and nhi.owner_id is None and nhi.owner_of_record is None
    with pytest.raises(NotAllowed, match="has no owner of record"):
        sod.check_may_open(Principal(id="bob"), nhi)
    (warning,) = [entry for entry in logs if entry["event"] == "nhi_owner_unknown"]
    assert warning["nhi"] == f"nhi:{name}" and warning["owner"] == written
    assert warning["problem"] == problem and warning["directory"] == "okta"


async def test_an_unknown_nhi_is_none_and_the_directorys_own_nhis_are_never_used(
    directory: DirectoryWithInventory, people: SandboxDirectory
) -> None:
    assert await people.find_nhi("legacy-token") is not None  # it is there, on the other side
    assert await directory.find_nhi("legacy-token") is None
    assert await directory.get("nhi:legacy-token") is None
    assert await directory.find_nhi("nhi:nope") is None
    assert await directory.get("legacy-token") is None  # a bare name is not an NHI id


async def test_when_the_directory_is_down_the_nhi_look_up_fails_rather_than_guessing() -> None:
    people = UnreachableDirectory()
    directory = DirectoryWithInventory(people, read_inventory(INVENTORY))

    with pytest.raises(ConnectionError):
        await directory.find_nhi("billing-api")
    with pytest.raises(ConnectionError):
        await directory.get("nhi:billing-api")
    assert people.asked == ["alice", "alice"]


async def test_an_nhi_without_an_owner_field_is_never_looked_up_as_anyone() -> None:
    people = UnreachableDirectory()
    nhi = Principal(id="nhi:bare", kind=PrincipalKind.NHI, owner_id=None)
    directory = DirectoryWithInventory(people, [nhi])

    found = await directory.find_nhi("bare")
    assert found is not None and found.owner_id is None
    assert people.asked == []


# ---- people from the directory ----------------------------------------------------------------


async def test_people_come_from_the_directory(directory: DirectoryWithInventory) -> None:
    (alice,) = await directory.find_by_email("ALICE@example.com")
    assert (alice.id, alice.groups) == ("alice", frozenset({"engineering"}))
    bob = await directory.get("bob")
    assert bob is not None and bob.kind is PrincipalKind.HUMAN and bob.groups == {"helpdesk"}
    judy = await directory.get("judy")
    assert judy is not None and judy.disabled  # returned as the directory says; callers refuse
    assert await directory.get("zoe") is None
    assert await directory.find_by_email("billing-api@example.com") == []


async def test_a_person_shaped_answer_that_is_an_nhi_is_not_taken_for_a_person() -> None:
    class Confused:
        """A directory that answers with NHIs where people are asked for."""

        nhi = Principal(id="nhi:x", kind=PrincipalKind.NHI, email="x@example.com")
        robot = Principal(id="robot", kind=PrincipalKind.NHI, email="x@example.com")

        async def find_by_email(self, email: str) -> list[Principal]:
            return [self.nhi, self.robot]

        async def get(self, principal_id: str) -> Principal | None:
            return self.robot

        async def find_nhi(self, name: str) -> Principal | None:
            return None

        async def search(self, text: str, limit: int = 20) -> list[Principal]:
            return [self.nhi, self.robot]

    directory = DirectoryWithInventory(Confused(), read_inventory(INVENTORY))
    assert await directory.find_by_email("x@example.com") == []
    assert await directory.get("robot") is None
    assert [p.id for p in await directory.search("x")] == []
    billing = await directory.find_nhi("billing-api")
    assert billing is not None and billing.owner_id is None  # "alice" answered by a robot


async def test_search_lists_people_then_nhis_without_owners(
    directory: DirectoryWithInventory,
) -> None:
    found = await directory.search("i")  # alice, and every "nhi:" id
    assert [p.id for p in found] == [
        "alice",
        "nhi:billing-api",
        "nhi:ci-deployer",
        "nhi:orphan-key",
        "nhi:left-behind",
        "nhi:not-a-person",
    ]  # people first; the people directory's own nhi:legacy-token is left out
    assert all(p.owner_id is None for p in found if p.kind is PrincipalKind.NHI)
    assert found[1].tags == {"production"} and found[1].system == "aws"

    assert [p.id for p in await directory.search("billing")] == ["nhi:billing-api"]
    assert [p.id for p in await directory.search("nhi:ci")] == ["nhi:ci-deployer"]
    assert len(await directory.search("", limit=4)) == 4
    assert await directory.search("", limit=0) == []


async def test_it_is_a_directory(directory: DirectoryWithInventory) -> None:
    port: Directory = directory
    assert await port.find_nhi("ci-deployer") is not None


# ---- the inventory file ----------------------------------------------------------------------


def test_an_inventory_lists_nhis_with_owners_as_written() -> None:
    nhis = read_inventory(INVENTORY, "inventory.yaml")
    assert [n.id for n in nhis] == [
        "nhi:billing-api",
        "nhi:ci-deployer",
        "nhi:orphan-key",
        "nhi:left-behind",
        "nhi:not-a-person",
    ]
    assert [n.owner_id for n in nhis][:3] == ["alice", "bob", "zoe"]
    assert all(n.kind is PrincipalKind.NHI for n in nhis)


def test_owners_may_be_spelled_as_the_directory_spells_ids() -> None:
    text = """
nhis:
  - {name: a, owner: 00uAbC123dEf}
  - {name: b, owner: 1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}
  - {name: c, owner: alice@example.com}
  - {name: d, owner: "CN=Alice Adams"}
  - {name: e, owner: "118245967321056874422"}
"""
    owners = [n.owner_id for n in read_inventory(text)]
    assert owners == [
        "00uAbC123dEf",
        "1f0e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "alice@example.com",
        "CN=Alice Adams",
        "118245967321056874422",
    ]


def test_people_are_refused_in_an_inventory_because_they_come_from_the_directory() -> None:
    text = "people: [{id: alice, email: a@example.com}]\nnhis: [{name: x, owner: alice}]\n"
    assert problems_of(text) == [
        "people: an NHI inventory lists no people: beside a real directory, people (and the "
        "owners named here) come from that directory; remove `people:`"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("- x\n", "the top level must be a mapping with `nhis:`"),
        ("version: 1\n", "nhis: required, but missing"),
        ("nhis: []\n", "nhis: list at least one NHI"),
        ("nhis: [{name: x}]\n", "nhis[0] 'x', field owner: required, but missing"),
        ("nhis: [{name: x, owner: 'nhi:y'}]\n", "nhis[0] 'x', field owner: 'nhi:y' is an NHI"),
        ("nhis: [{name: x, owner: ' alice'}]\n", "nhis[0] 'x', field owner: ' alice' is not a"),
        ("nhis: [{name: x, owner: ''}]\n", "nhis[0] 'x', field owner: '' is not a usable owner"),
        (f"nhis: [{{name: x, owner: {'a' * 201}}}]\n", "nhis[0] 'x', field owner: 'aaaa"),
        ("nhis: [{name: Bad, owner: alice}]\n", "nhis[0] 'Bad', field name: 'Bad' is not a"),
        (
            "nhis: [{name: x, owner: 0123}]\n",
            "nhis[0] 'x', field owner: Input should be a valid string: write it in quotes ('...')",
        ),
        (
            "nhis: [{name: x, owner: a, ownr: b}]\n",
            "nhis[0] 'x', field ownr: unknown field 'ownr' (allowed here: disabled, "
            "display_name, name, owner, system, tags)",
        ),
        (
            "nhis: [{name: x, owner: a}]\nteams: []\n",
            "teams: unknown field 'teams' (allowed here: nhis, version)",
        ),
        ("nhis: [{name: x, owner: a}, {name: x, owner: b}]\n", "nhis[1] 'x', field name: 'x' is"),
        ("nhis: [{name: x, owner: a, owner: b}]\n", "line 1, column 28: the key 'owner' is"),
    ],
)
def test_inventory_mistakes_are_named_with_their_place(text: str, expected: str) -> None:
    (problem,) = problems_of(text)
    assert problem.startswith(expected)


def test_an_inventory_file_is_read_and_a_missing_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nhis.yaml"
    path.write_text(INVENTORY, encoding="utf-8")
    people = SandboxDirectory.from_yaml(PEOPLE)
    directory = DirectoryWithInventory.from_file(people, path, people_name="okta")
    assert directory.source == str(path) and len(directory.nhis) == 5

    with pytest.raises(DirectoryFileError, match="no such file"):
        DirectoryWithInventory.from_file(people, tmp_path / "absent.yaml")


def test_an_inventory_holds_nhis_only_and_each_once() -> None:
    people = SandboxDirectory.from_yaml(PEOPLE)
    with pytest.raises(ValueError, match="not an NHI"):
        DirectoryWithInventory(people, [Principal(id="alice")])
    twice = read_inventory("nhis: [{name: x, owner: a}]") * 2
    with pytest.raises(ValueError, match="appears twice"):
        DirectoryWithInventory(people, twice)


@pytest.mark.parametrize("page", ["directory.md", "connectors.md"])
def test_every_inventory_example_in_the_docs_loads(page: str) -> None:
    text = (DOCS / page).read_text("utf-8")
    blocks = re.findall(r"```yaml inventory\n(.*?)```", text, re.DOTALL)
    assert blocks, f"docs/{page} should show an NHI inventory"
    for block in blocks:
        assert read_inventory(block, f"docs/{page}")


# ---- `check`: owners the directory does not know ------------------------------------------


async def test_the_check_names_each_owner_the_directory_cannot_vouch_for(
    directory: DirectoryWithInventory,
) -> None:
    unknown = await directory.unknown_owners()
    assert [(nhi.id, why) for nhi, why in unknown] == [
        ("nhi:orphan-key", "is not a person"),
        ("nhi:left-behind", "is a disabled account"),
        ("nhi:not-a-person", "is not a person"),
    ]
    results = await directory.check()
    assert [r.status for r in results] == [CheckStatus.MISSING] * 3
    assert results[0].what == "owner of nhi:orphan-key"
    assert results[0].detail.startswith("'zoe' is not a person in okta; requests on this NHI")


async def test_the_check_passes_when_every_owner_is_known(people: SandboxDirectory) -> None:
    nhis = read_inventory("nhis: [{name: x, owner: alice}, {name: y, owner: bob}]")
    (result,) = await DirectoryWithInventory(people, nhis, source="nhis.yaml").check()
    assert result.status is CheckStatus.OK
    assert result.detail == "all 2 owners in nhis.yaml are in the directory"


async def test_the_check_says_when_the_directory_cannot_be_asked() -> None:
    directory = DirectoryWithInventory(
        UnreachableDirectory(), read_inventory(INVENTORY), people_name="okta"
    )
    (result,) = await directory.check()
    assert result.status is CheckStatus.MISSING
    assert result.detail == "okta could not be asked (ConnectionError)"
