"""Drawings: the lecture's pictures, read back from the DOT text symgrad hands to Graphviz.

Expected numbers are the lecture's (shared/LECTURE.md, examples 1-4), never symgrad's own: the
neuron's forward pass gate by gate (w0x0 = -2, ..., exp = 0.37, +1 = 1.37, 1/x = 0.73) and its
backward pass (1/x -> -0.53, +1 -> -0.53, exp -> -0.20, *(-1) -> 0.20, the adds -> 0.20).
"""

from __future__ import annotations

import html
import re
import warnings
from xml.etree import ElementTree

import numpy as np
import pytest

import compiler
from compiler.viz import Drawing, display
from runtime import cli

NEURON = "1/(1+exp(-(w0*x0+w1*x1+w2)))"
NEURON_AT = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}
GREEN, RED, GRAY = "#1a7f37", "#cf222e", "#6e7781"

_NODE = re.compile(r'^\s*"([^"]+)" \[label=<(.*?)>, ', re.M)
_WIRE = re.compile(r'^\s*"([^"]+)" \[shape=plaintext, [^\n]*label=<(<table.*</table>)>\];$', re.M)
_INTO = re.compile(r'^\s*"([^"]+)" -> "([^"]+)"(:w:[ns]|:w:w)? \[arrowhead=none\];$', re.M)
_EDGE = re.compile(r'^\s*"([^"]+)"(:w:[es])? -> "([^"]+)";$', re.M)
_FONT = re.compile(r'<font color="(#\w+)"[^>]*>(.*?)</font>')


def _text(label: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", label)).split()[0] if label else ""


class Edges(dict):
    def __init__(self):
        super().__init__()
        self.repeated: dict[tuple[str, str], list[dict]] = {}


def picture(drawing) -> tuple[dict[str, str], dict[tuple[str, str], dict[str, list[str]]]]:
    """(node id -> label's first word, (tail label, head label) -> {"value", "grad", "shape"});
    every edge between equally labelled nodes is in ``edges.repeated``. An edge's numbers are
    a node on it (``tail -> wire -> head``): they are read back as that edge's."""
    source = drawing.source
    labels = {ident: _text(label) for ident, label in _NODE.findall(source)}
    wires = dict(_WIRE.findall(source))
    tails = {wire: tail for tail, wire, _ in _INTO.findall(source)}
    edges = Edges()
    kinds = {GREEN: "value", RED: "grad", GRAY: "shape"}
    for tail, _, head in _EDGE.findall(source):
        found: dict[str, list[str]] = {"value": [], "grad": [], "shape": []}
        for color, text in _FONT.findall(wires.get(tail, "")):
            found[kinds[color]].append(html.unescape(text))
        tail = tails.get(tail, tail)
        key = (labels.get(tail, tail), labels.get(head, head))
        edges.repeated.setdefault(key, []).append(found)
        edges[key] = found
    return labels, edges


def on(edges, tail: str, head: str) -> tuple[str, str]:
    e = edges[(tail, head)]
    return " ".join(e["value"]), " ".join(e["grad"])


# ------------------------------------------------------------------------------ example 2
@pytest.fixture(scope="module")
def neuron():
    return compiler.compile_gradient(NEURON, fuse=False), compiler.compile_gradient(NEURON)


def test_example2_unfused_carries_the_lectures_values_and_gradients(neuron):
    labels, edges = picture(compiler.draw(neuron[0], at=NEURON_AT))
    # the gates, labelled from the op table with constants folded in as the lecture does
    assert sorted(labels.values()) == sorted(
        ["w0", "x0", "w1", "x1", "w2", "*", "*", "+", "+", "-x", "exp", "+1", "1/x", "f"]
    )
    assert on(edges, "w0", "*") == ("2.00", "-0.20")
    assert on(edges, "x0", "*") == ("-1.00", "0.39")
    assert on(edges, "w1", "*") == ("-3.00", "-0.39")
    assert on(edges, "x1", "*") == ("-2.00", "-0.59")
    assert on(edges, "w2", "+") == ("-3.00", "0.20")
    assert on(edges, "+", "-x") == ("1.00", "0.20")  # the adds -> 0.20
    assert on(edges, "-x", "exp") == ("-1.00", "-0.20")  # exp -> -0.20
    assert on(edges, "exp", "+1") == ("0.37", "-0.53")  # +1 -> -0.53
    assert on(edges, "+1", "1/x") == ("1.37", "-0.53")  # 1/x -> -0.53
    assert on(edges, "1/x", "f") == ("0.73", "1.00")
    products = sorted((e["value"], e["grad"]) for e in edges.repeated[("*", "+")])
    assert products == [(["-2.00"], ["0.20"]), (["6.00"], ["0.20"])]
    assert on(edges, "+", "+") == ("4.00", "0.20")


def test_example2_exact_gradients_with_more_digits(neuron):
    _, edges = picture(compiler.draw(neuron[0], at=NEURON_AT, digits=6))
    assert on(edges, "w0", "*")[1] == "-0.196612"
    assert on(edges, "x1", "*")[1] == "-0.589836"
    assert on(edges, "1/x", "f")[0] == "0.731059"


def test_fused_gate_is_one_node_with_the_same_numbers(neuron):
    unfused = compiler.draw(neuron[0], at=NEURON_AT)
    fused = compiler.draw(neuron[1], at=NEURON_AT)
    # the lecture's eight gates; -x, exp, +1 and 1/x collapse into one sigmoid gate
    assert (unfused.gates, fused.gates) == (8, 5)
    labels, edges = picture(fused)
    assert list(labels.values()).count("sigmoid") == 1
    assert not {"exp", "+1", "1/x", "-x"} & set(labels.values())
    # sigma(1 - sigma) = 0.196611933241 at sigma = 0.73: the same gradient flows back
    assert on(edges, "+", "sigmoid") == ("1.00", "0.20")
    assert on(edges, "sigmoid", "f") == ("0.73", "1.00")
    assert on(edges, "w0", "*") == ("2.00", "-0.20")
    assert "1 / (1 + exp(-x))" in html.unescape(fused.source)  # what the gate replaced
    assert "peripheries" in fused.source  # drawn unlike a primitive


def test_expanded_gate_shows_the_subgraph_it_replaced(neuron):
    drawing = compiler.draw(neuron[1], at=NEURON_AT, expand=True)
    labels, edges = picture(drawing)
    assert "cluster_" in drawing.source and drawing.gates == 5
    assert on(edges, "-x", "exp") == ("-1.00", "-0.20")
    assert on(edges, "exp", "+1") == ("0.37", "-0.53")
    assert on(edges, "1/x", "f") == ("0.73", "1.00")
    assert on(edges, "+", "-x") == ("1.00", "0.20")


def test_drawing_without_a_point_has_no_numbers(neuron):
    _, edges = picture(compiler.draw(neuron[0]))
    assert all(not e["value"] and not e["grad"] for e in edges.values())


def test_backward_graph_names_each_gradient(neuron):
    drawing = compiler.draw(neuron[1], at=NEURON_AT, backward=True)
    labels, edges = picture(drawing)
    assert "seed" in labels.values()
    grads = {h: v for (t, h), e in edges.items() if h.startswith("df/d") for v in e["value"]}
    assert grads == {"df/dw0": "-0.20", "df/dx0": "0.39", "df/dw1": "-0.39",
                     "df/dx1": "-0.59", "df/dw2": "0.20"}  # fmt: skip
    assert not any(e["grad"] for e in edges.values())  # the backward graph carries values only


def test_wrt_narrows_the_gradients_drawn():
    k = compiler.compile_gradient("(x + y) * z")
    assert k.adjoint.wrt == ("x", "y", "z")  # built for every input
    point = {"x": -2, "y": 5, "z": -4}
    _, edges = picture(compiler.draw(k, at=point, wrt=["z"]))
    assert on(edges, "z", "*") == ("-4.00", "3.00")
    assert on(edges, "x", "+") == ("-2.00", "")  # no path from z: no gradient on it
    labels, _ = picture(compiler.draw(k, at=point, backward=True, wrt=["z"]))
    assert "df/dz" in labels.values() and "df/dx" not in labels.values()


def test_svg_and_png_render(neuron, tmp_path):
    drawing = compiler.draw(neuron[0], at=NEURON_AT)
    svg = html.unescape(drawing.svg())  # dot writes "-" as &#45;
    assert "<svg" in svg and ">0.73<" in svg and ">-0.20<" in svg
    assert drawing.save(tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in drawing.save(tmp_path / "g.svg").read_text()
    assert drawing.save(tmp_path / "g.dot").read_text() == drawing.source
    with pytest.raises(compiler.DrawError, match="format"):
        drawing.save(tmp_path / "g.jpg")


# ------------------------------------------------------------------------------ examples 1, 3, 4
def test_example1_add_distributes_mul_swaps():
    _, edges = picture(compiler.draw("(x + y) * z", at={"x": -2, "y": 5, "z": -4}))
    assert on(edges, "x", "+") == ("-2.00", "-4.00")
    assert on(edges, "y", "+") == ("5.00", "-4.00")
    assert on(edges, "+", "*") == ("3.00", "-4.00")  # q = 3, df/dq = z = -4
    assert on(edges, "z", "*") == ("-4.00", "3.00")  # df/dz = q = 3
    assert on(edges, "*", "f") == ("-12.00", "1.00")


def test_example3_max_routes_the_upstream_gradient():
    drawing = compiler.draw("maximum(z, w)", at={"z": 2, "w": -1}, seed=2.0)
    labels, edges = picture(drawing)
    assert "max" in labels.values()
    assert on(edges, "z", "max") == ("2.00", "2.00")
    assert on(edges, "w", "max") == ("-1.00", "0.00")


def test_fan_out_edges_carry_their_own_share():
    # x feeds both operands of x * x: each edge carries upstream * the other operand (3), and
    # the two add up to df/dx = 2x = 6
    _, edges = picture(compiler.draw("x * x + y", at={"x": 3, "y": 1}))
    assert on(edges, "x", "*") == ("3.00", "3.00")
    src = compiler.draw("x * x + y", at={"x": 3, "y": 1}).source
    assert len(re.findall(r'^  "n0" -> ', src, re.M)) == 2


def test_example4_tensor_shapes_and_small_values():
    k = compiler.compile_gradient(
        "sum((W @ x)**2)", shapes={"W": ("n", "n"), "x": ("n",)}, fuse=False
    )
    at = {"W": [[0.1, 0.5], [-0.3, 0.8]], "x": [0.2, 0.4]}
    _, edges = picture(compiler.draw(k, at=at, digits=3))
    w = edges[("W", "@")]
    assert w["shape"] == ["(n, n)"]
    assert w["grad"] == ["[0.088, 0.176]", "[0.104, 0.208]"]  # 2 q x^T
    assert edges[("x", "@")]["grad"] == ["[-0.112, 0.636]"]  # 2 W^T q
    q = edges[("@", "**2")]
    assert q["shape"] == ["(n,)"] and q["value"] == ["[0.220, 0.260]"]
    assert q["grad"] == ["[0.440, 0.520]"]  # 2q
    assert on(edges, "sum(x,", "f") == ("0.116", "1.000")


def test_large_tensors_show_shapes_only():
    k = compiler.compile_gradient(
        "sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2)",
        shapes={"x": ("N", "D"), "w1": ("D", "H"), "w2": ("H", "C"), "y": ("N", "C")},
        wrt=["w1", "w2"],
    )
    rng = np.random.default_rng(0)
    at = {"x": rng.normal(size=(8, 4)), "w1": rng.normal(size=(4, 3)),
          "w2": rng.normal(size=(3, 2)), "y": rng.normal(size=(8, 2))}  # fmt: skip
    labels, edges = picture(compiler.draw(k, at=at))
    assert edges[("x", "@")] == {"value": [], "grad": [], "shape": ["(N, D)"]}
    assert edges[("w2", "@")]["shape"] == ["(H, C)"]
    assert "sigmoid" in labels.values()
    value = k(**at)
    assert edges[("sumsq", "f")]["value"] == [f"{value:.2f}"]
    big = compiler.draw(k, at=at, backward=True)
    assert "df/dw1" in picture(big)[0].values()


# ------------------------------------------------------------------------------ compare
def test_compare_reports_both_kernels(tmp_path):
    c = compiler.compare(NEURON, at=NEURON_AT, elements=1000, repeat=2)
    assert c.nodes == (8, 5)
    assert c.backward_ops == c.fused.fusion.counts["backward ops"]
    saved_u, saved_f = c.rows["saved values"]
    assert saved_f < saved_u
    assert c.saved_bytes == (8 * 1000 * saved_u, 8 * 1000 * saved_f)
    assert all(isinstance(s, float) and s > 0 for s in c.seconds)
    assert [d.gates for d in c.drawings] == [8, 5]
    text = str(c)
    for row in ("forward nodes", "backward ops", "saved bytes", "value_and_grad time"):
        assert row in text
    page = c._repr_html_()
    assert page.count("<svg") == 2 and "unfused" in page and "fused" in page
    assert c.save(tmp_path / "c.svg").read_text().count("0.73") >= 2
    assert c.unfused(**NEURON_AT) == pytest.approx(0.731058578630, abs=1e-12)


def test_compare_tensor_program_times_at_the_point():
    rng = np.random.default_rng(1)
    at = {"W": rng.normal(size=(3, 3)), "x": rng.normal(size=3)}
    c = compiler.compare("sum((W @ x)**2)", at=at, shapes={"W": ("n", "n"), "x": ("n",)})
    assert c.nodes[1] <= c.nodes[0] and "n=3" in c.measured
    untimed = compiler.compare("sum((W @ x)**2)", shapes={"W": ("n", "n"), "x": ("n",)})
    assert untimed.seconds == (None, None)


# ------------------------------------------------------------------------------ Jupyter
def test_rich_display(neuron):
    unfused, fused = neuron
    assert "<svg" in fused.graph._repr_svg_()
    assert "<svg" in fused.adjoint._repr_svg_()
    page = fused._repr_html_()
    assert "<svg" in page and "generated source" in page
    report = fused.fusion._repr_html_()
    assert report.count("<svg") == 2 and "sigmoid" in report
    tensor = compiler.compile_gradient("sum((W @ x)**2)", shapes={"W": ("n", "n"), "x": ("n",)})
    assert "<svg" in tensor._repr_html_()
    code = compiler.viz.source(fused)
    assert str(code) == fused.source and "<span" in code._repr_html_()


def test_big_graphs_display_as_text():
    g = compiler.trace(" + ".join(f"sin(x{i})" for i in range(display.REPR_MAX_OPS)))
    assert g._repr_svg_() is None


# ------------------------------------------------------------------------------ CLI, no dot
def test_cli_draw_writes_the_picture(tmp_path, capsys):
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    assert cli.main(["--draw", str(svg)]) == 0
    assert cli.main(["(x + y) * z", "--at", "x=-2,y=5,z=-4", "--draw", str(png)]) == 0
    text = html.unescape(svg.read_text())
    assert ">0.73<" in text and ">-0.20<" in text
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"picture: {png}" in capsys.readouterr().out


def test_missing_dot_says_how_to_install_it(monkeypatch, tmp_path, capsys, neuron):
    drawing = Drawing("digraph { a -> b }", 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(compiler.DrawError, match="apt-get install graphviz"):
        compiler.draw(neuron[0], at=NEURON_AT)
    with pytest.raises(compiler.DrawError, match="dot"):
        drawing.save(tmp_path / "g.png")
    assert cli.main(["--draw", str(tmp_path / "g.svg")]) == 2
    assert "apt-get install graphviz" in capsys.readouterr().err
    monkeypatch.setattr(display, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert neuron[1].graph._repr_svg_() is None  # Jupyter falls back to the text repr
    assert "graphviz" in str(caught[0].message)


TENSOR_GATE_FORMS = [
    "log(sum(exp(S), axis=1))",
    "max(S, axis=1) + log(sum(exp(S - max(S, axis=1, keepdims=True)), axis=1))",
    "exp(S) / sum(exp(S), axis=0, keepdims=True)",
    "log(exp(S) / sum(exp(S), axis=1, keepdims=True))",
    "S - log(sum(exp(S), axis=1, keepdims=True))",
    "sum(S * S, axis=0)",
]


@pytest.mark.parametrize("form", TENSOR_GATE_FORMS)
def test_every_tensor_gate_expands_to_what_it_replaced(form):
    """expand=True opens each tensor gate, and the subgraph drawn computes what the gate does:
    its text, evaluated unfused, equals the written form at a random point."""
    shapes = {"S": ("B", "C")}
    k = compiler.compile_gradient(f"sum({form})", shapes=shapes)
    (gate,) = [i for i in k.graph.notes if k.graph.nodes[k.graph.nodes[i].args[0]].op == "input"]
    drawing = compiler.draw(k.graph, expand=True)
    assert drawing.source.count('subgraph "cluster_') == 1
    body = k.graph.notes[gate].format(a="S")
    S = np.random.default_rng(2).standard_normal((3, 4))
    written = compiler.compile_gradient(f"sum({form})", shapes=shapes, fuse=False)
    replaced = compiler.compile_gradient(f"sum({body})", shapes=shapes, fuse=False)
    np.testing.assert_allclose(replaced(S=S), written(S=S), rtol=1e-12)


# ------------------------------------------------------------------------------ at notebook width
# These read the SVG dot laid out: where text and lines are, and how big text is at 900 px.
_SVG = "{http://www.w3.org/2000/svg}"
NOTEBOOK_PX = 900


def _curve(d: str) -> list[tuple[float, float]]:
    """Points along an SVG path of dot's form ``M p C p p p p p p ...`` (cubic Béziers)."""
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", d)]
    pts = list(zip(nums[::2], nums[1::2]))
    out = [pts[0]]
    for k in range(1, len(pts) - 2, 3):
        p0, p1, p2, p3 = pts[k - 1], pts[k], pts[k + 1], pts[k + 2]
        for t in np.linspace(0.05, 1, 20):
            s = 1 - t
            out.append(tuple(s**3 * a + 3 * s * s * t * b + 3 * s * t * t * c + t**3 * e
                             for a, b, c, e in zip(p0, p1, p2, p3)))  # fmt: skip
    return out


def layout(svg: str):
    """(texts: [(text, x, y, size)], lines: [(owner node id, points)], inputs: {name: (x, y)});
    a line's owner is the node its edge starts from: an edge into a value label continues
    through the label's wire and out of it, all owned by the edge's tail."""
    root = ElementTree.fromstring(svg.encode())
    texts, lines, inputs, into = [], [], {}, {}
    for g in root.iter(f"{_SVG}g"):
        kind, title = g.get("class"), g.findtext(f"{_SVG}title")
        for t in g.iter(f"{_SVG}text") if kind in ("node", "edge") else ():
            size = float(t.get("font-size"))
            texts.append((t.text, float(t.get("x")), float(t.get("y")), size))
        if kind == "edge":
            tail, head = (end.split(":")[0] for end in title.split("->"))
            into[head] = tail
            for p in g.iter(f"{_SVG}path"):
                lines.append((tail, _curve(p.get("d"))))
        elif kind == "node":
            for p in g.iter(f"{_SVG}polygon"):  # a value label's wire
                if p.get("fill") == GRAY:
                    pts = [tuple(map(float, xy.split(","))) for xy in p.get("points").split()]
                    lines.append((title, pts))
            box = g.find(f".//{_SVG}path")
            if box is not None and box.get("fill") == "#ddf4ff":
                xy = np.array(_curve(box.get("d")))
                inputs[g.findtext(f".//{_SVG}text").split(" =")[0]] = tuple(xy.mean(axis=0))
    return texts, [(into.get(o, o), pts) for o, pts in lines], inputs


def legible_px(svg: str) -> float:
    """The smallest text's size in CSS px when the picture is shown at most 900 px wide."""
    width = float(re.search(r'viewBox="[\d.-]+ [\d.-]+ ([\d.]+) ', svg).group(1))
    smallest = min(float(s) for s in re.findall(r'font-size="([\d.]+)"', svg))
    return smallest * min(4 / 3, NOTEBOOK_PX / width)  # 1 pt = 4/3 px; wider pictures shrink


def test_a_tensor_value_sits_on_the_edge_from_the_node_that_made_it():
    k = compiler.compile_gradient(
        "sum((W @ x)**2)", shapes={"W": ("n", "n"), "x": ("n",)}, fuse=False
    )
    drawing = compiler.draw(k, at={"W": [[0.1, 0.5], [-0.3, 0.8]], "x": [0.2, 0.4]}, digits=3)
    texts, lines, _ = layout(drawing.svg())
    names = {ident: label for ident, label in picture(drawing)[0].items()}
    W, x = np.array([[0.1, 0.5], [-0.3, 0.8]]), np.array([0.2, 0.4])
    q = W @ x  # NumPy's values, each with the node that produced it
    for producer, value in [("W", "[0.100, 0.500]"), ("x", "[0.200, 0.400]"),
                            ("@", f"[{q[0]:.3f}, {q[1]:.3f}]"),
                            ("**2", f"[{q[0]**2:.3f}, {q[1]**2:.3f}]")]:  # fmt: skip
        (text, tx, ty, size), = [t for t in texts if html.unescape(t[0] or "") == value]  # fmt: skip
        centre = np.array([tx + 0.3 * size * len(text), ty - 0.35 * size])
        nearest = min(lines, key=lambda line: np.min(np.hypot(*(np.array(line[1]) - centre).T)))
        assert names[nearest[0]] == producer, (value, names[nearest[0]])


def test_inputs_are_drawn_in_the_kernels_order_by_draw_and_compare():
    text = "x1*w1 + 1/(1+exp(-(w0*x0+w2)))"
    k = compiler.compile_gradient(text)
    assert k.inputs == ("x1", "w1", "w0", "x0", "w2")
    at = dict(x1=-2.0, w1=-3.0, w0=2.0, x0=-1.0, w2=-3.0)
    c = compiler.compare(text, at=at, repeat=0)
    for drawing in [compiler.draw(k, at=at), compiler.draw(k), *c.drawings]:
        inputs = layout(drawing.svg())[2]
        xs, ys = np.array(list(inputs.values())).T
        across = np.ptp(xs) > np.ptp(ys)  # in a row (top to bottom) or a column (left to right)
        drawn = sorted(inputs, key=lambda n: inputs[n][0 if across else 1])
        assert tuple(drawn) == k.inputs


def test_an_input_shows_its_total_gradient_where_it_fans_out():
    # x feeds both operands of x * x and the sin: df/dx = 2x + cos(x), SymPy's derivative
    import sympy

    X = sympy.Symbol("x")
    total = float(sympy.diff(X * X + sympy.sin(X), X).subs(X, 3))
    labels = dict(_NODE.findall(compiler.draw("x * x + sin(x)", at={"x": 3}).source))
    (x_label,) = [lab for lab in labels.values() if _text(lab) == "x"]
    shown = html.unescape(re.sub(r"<[^>]+>", "", x_label.replace("<br/>", "\n")))
    assert shown.splitlines() == ["x = 3.00", "∂f/∂x =", f"{total:.2f}"]


def thirteen_inputs():
    text = "1/(1+exp(-(" + "+".join(f"w{i}*x{i}" for i in range(6)) + "+b)))"
    at = {**{f"w{i}": 0.1 * i for i in range(6)}, **{f"x{i}": 1 - 0.2 * i for i in range(6)}}
    return compiler.compile_gradient(text), {**at, "b": 0.5}


def two_layer_net():
    shapes = {"x": ("N", "D"), "w1": ("D", "H"), "w2": ("H", "C"), "y": ("N", "C")}
    return compiler.compile_gradient(
        "sum((1/(1+exp(-(x @ w1))) @ w2 - y)**2) / N", shapes=shapes, wrt=["w1", "w2"]
    )


def softmax_compare():
    rng = np.random.default_rng(0)
    at = dict(x=rng.normal(size=(2, 2)), W=rng.normal(size=(2, 3)), y=np.eye(3)[[0, 2]])
    text = "-sum(y * log(exp(x @ W) / sum(exp(x @ W), axis=1, keepdims=True)))"
    shapes = {"x": ("N", "D"), "W": ("D", "C"), "y": ("N", "C")}
    return compiler.compare(text, at=at, shapes=shapes, repeat=0)


@pytest.mark.parametrize(
    "case",
    [
        lambda: compiler.draw(*thirteen_inputs(), backward=True),
        lambda: compiler.draw(*thirteen_inputs()),
        lambda: compiler.draw(two_layer_net(), backward=True),
        lambda: softmax_compare().drawing,
        lambda: softmax_compare().drawings[0],
        lambda: compiler.draw(NEURON, at=NEURON_AT),
    ],
    ids=[
        "13-input backward",
        "13-input forward",
        "two-layer net backward",
        "softmax compare",
        "softmax unfused",
        "neuron",
    ],  # fmt: skip
)
def test_text_stays_readable_at_notebook_width(case):
    assert legible_px(case().svg()) >= 8


def test_jupyter_scrolls_rather_than_shrink_text_below_8px():
    drawing = compiler.draw(*thirteen_inputs())
    page = display.fitted_svg(drawing)
    least = float(re.search(r"min-width:(\d+)px", page).group(1))
    svg = drawing.svg()
    width = float(re.search(r'viewBox="[\d.-]+ [\d.-]+ ([\d.]+) ', svg).group(1))
    smallest = min(float(s) for s in re.findall(r'font-size="([\d.]+)"', svg))
    assert smallest * least / width >= 8 - 0.01  # the smallest text at the narrowest it is shown
    assert "overflow-x:auto" in page and "max-width:100%" in page


def test_compare_draws_the_unfused_graph_first():
    """Saved as one picture, unfused comes first: on top (left to right) or on the left."""
    svg = softmax_compare().drawing.svg()
    boxes = {}
    for g in ElementTree.fromstring(svg.encode()).iter(f"{_SVG}g"):
        if g.get("class") == "cluster":
            shape = g.find(f"{_SVG}path")
            xy = np.array(_curve(shape.get("d")))
            boxes[g.findtext(f"{_SVG}title")] = (*xy.min(axis=0), *xy.max(axis=0))
    unfused, fused = boxes["cluster_u"], boxes["cluster_f"]  # (x0, y0, x1, y1)
    assert unfused[2] <= fused[0] or unfused[3] <= fused[1], boxes


def test_a_long_title_wraps_instead_of_widening_the_picture():
    title = "+".join(f"w{i}*x{i}" for i in range(100))
    drawing = compiler.draw("x * y", at={"x": 1, "y": 2}, title=title)
    assert legible_px(drawing.svg()) >= 8
    assert "w0*x0+w1*x1+w2*x2" in drawing.source
