"""An episode as a graph: each query, the pages it brought, the crops taken from each, the answer.

This is the memory-graph view of VimRAG (arXiv 2602.12735) built from a trajectory record alone:
what the agent gathered, and from what. Nodes are laid out in columns by kind (question, queries,
pages, crops, crops of crops, answer) and each opens the turn that made it. Structure only: no
drawing here (agent/figures.py `graph_figure` draws it).

- a query node per search turn, linked from the question;
- a page node per page shown to the model (once, however often it was found), linked from the
  query that showed it; a search that showed no new page links to its top hit when that page is
  already in the graph;
- a crop node per bbox turn, linked from the image it was cut from (a page, or an earlier crop);
- the answer, linked from the last image the model saw before answering;
- invalid replies hang off the question, so every turn has a node.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from agent.trajectory import Trajectory

KINDS = ("question", "query", "page", "crop", "answer", "invalid")


@dataclass
class Node:
    key: str  # unique: "question", "query:0", "page:slide_3", "crop:4", "answer", "invalid:7"
    kind: str  # one of KINDS
    label: str  # a few words, drawn beside the node
    detail: str  # the full text, shown on hover
    turn: int  # the turn this node opens (0-based)
    column: int = 0
    row: float = 0.0


@dataclass
class Edge:
    source: str
    target: str
    kind: str  # "asked", "brought", "found again", "cropped", "answered", "invalid"


@dataclass
class EpisodeGraph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, key: str) -> Node:
        return next(n for n in self.nodes if n.key == key)

    def nodes_of_turn(self, turn: int) -> list[Node]:
        return [n for n in self.nodes if n.turn == turn and n.kind != "question"]


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def episode_graph(trajectory: Trajectory, label_width: int = 26) -> EpisodeGraph:
    graph = EpisodeGraph()
    graph.nodes.append(Node("question", "question", _cut(trajectory.question, label_width), trajectory.question, 0))
    image_node: dict[str, str] = {}  # ImageView.file -> node key (the image the model saw, as a node)
    page_node: dict[str, str] = {}  # page id -> node key
    depth: dict[str, int] = {}  # node key -> column
    last_image: str | None = None
    for turn in trajectory.turns:
        i = turn.index
        if turn.action == "search":
            key = f"query:{i}"
            graph.nodes.append(Node(key, "query", _cut(turn.argument, label_width), f"turn {i + 1} · search: {turn.argument}", i, 1))
            graph.edges.append(Edge("question", key, "asked"))
            if turn.observation is not None:
                page = turn.observation.page_id
                if page not in page_node:
                    page_node[page] = f"page:{page}"
                    graph.nodes.append(Node(page_node[page], "page", _cut(page, label_width), f"turn {i + 1} · page {page} shown to the model", i, 2))
                    depth[page_node[page]] = 2
                image_node[turn.observation.file] = page_node[page]
                graph.edges.append(Edge(key, page_node[page], "brought"))
                last_image = page_node[page]
            elif turn.hits and turn.hits[0]["page_id"] in page_node:
                graph.edges.append(Edge(key, page_node[turn.hits[0]["page_id"]], "found again"))
        elif turn.action == "bbox" and turn.observation is not None and turn.acted_on is not None:
            key = f"crop:{i}"
            parent = image_node.get(turn.acted_on.file) or page_node.get(turn.acted_on.page_id)
            column = depth.get(parent, 2) + 1
            region = ", ".join(f"{v:.0f}" for v in turn.observation.region)
            graph.nodes.append(Node(key, "crop", f"crop of {_cut(turn.observation.page_id, label_width - 8)}",
                                    f"turn {i + 1} · crop of page {turn.observation.page_id} [{region}]", i, column))
            depth[key] = column
            image_node[turn.observation.file] = key
            if parent is not None:
                graph.edges.append(Edge(parent, key, "cropped"))
            last_image = key
        elif turn.action == "answer":
            graph.nodes.append(Node("answer", "answer", _cut(turn.argument, label_width), f"turn {i + 1} · answer: {turn.argument}", i))
            graph.edges.append(Edge(last_image or "question", "answer", "answered"))
        else:
            key = f"invalid:{i}"
            graph.nodes.append(Node(key, "invalid", "invalid reply", f"turn {i + 1} · invalid reply: {turn.error or turn.raw_text[:80]}", i, 1))
            graph.edges.append(Edge("question", key, "invalid"))
    _lay_out(graph, depth)
    return graph


def _lay_out(graph: EpisodeGraph, depth: dict[str, int]) -> None:
    """Columns by kind (answer last); within a column, nodes in the order the episode made them,
    each column centred on the tallest one."""
    last = max([n.column for n in graph.nodes] + [2]) + 1
    for node in graph.nodes:
        if node.kind == "answer":
            node.column = last
        elif node.kind == "crop":
            node.column = depth[node.key]
    columns: dict[int, list[Node]] = {}
    for node in graph.nodes:
        columns.setdefault(node.column, []).append(node)
    tallest = max(len(nodes) for nodes in columns.values())
    for nodes in columns.values():
        offset = (tallest - len(nodes)) / 2
        for row, node in enumerate(nodes):
            node.row = offset + row
