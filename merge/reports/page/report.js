// auditcov's report page: reads the JSON document embedded in the page (merge/reports/html.py describes it) and
// draws the views itself: a sunburst of the endpoints, the tests, each test's endpoints and lines, each file's
// lines with the tests that ran them, and the diff against another run. No library, no network.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("auditcov-data").textContent);
  const ELIGIBLE = 1, PENDING = 2;
  const HOW = { e2e: 1, other: 2, namespace: 4, window: 8 };
  const HOW_WORDS = [[HOW.e2e, "direct"], [HOW.other, "direct (other client)"], [HOW.namespace, "namespace"],
                     [HOW.window, "window"]];
  const LEVELS = ["stable", "beta", "alpha"];
  const STATUS_NAMES = { conf: "conformance-tested", tested: "tested", untested: "untested" };
  const filters = { eligibleOnly: false, conformanceOnly: false, indirect: true, successOnly: false, ownLines: true };

  // ---- small DOM helpers: text always goes in as text, never as markup ----
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }
  const fmt = (n) => n.toLocaleString("en-US");
  const pct = (part, whole) => (whole ? (100 * part / whole).toFixed(1) + "%" : "–");
  function link(text, hash, cls) { return el("a", { href: "#" + hash, class: cls }, text); }
  function badge(text, cls) { return el("span", { class: "badge " + cls }, text); }

  // ---- the model, decoded once ----
  const endpoints = (DATA.endpoints || []).map(([id, method, path, level, group, kind, flags], index) => (
    { index, id, method, path, level, group, kind, eligible: !!(flags & ELIGIBLE), pending: !!(flags & PENDING),
      hits: [], all: (DATA.endpoint_hits || {})[index] || null }));
  const tests = (DATA.tests || []).map(([name, conformance], index) => (
    { index, name, conformance: !!conformance, hits: [], code: (DATA.code || {})[index] || null }));
  const hits = DATA.hits || [];
  // Per test and endpoint: how it hit it, the ways with a successful hit, how many events, how many successful.
  for (let i = 0; i < hits.length; i += 6) {
    const [t, e, how, ok, count, successful] = hits.slice(i, i + 6);
    endpoints[e].hits.push([t, how, ok, count, successful]);
    tests[t].hits.push([e, how, ok, count, successful]);
  }
  const files = DATA.files || [];
  const testByName = new Map(tests.map((test) => [test.name, test]));
  const endpointById = new Map(endpoints.map((endpoint) => [endpoint.id, endpoint]));
  // Code that ran between tests (the Python agent's empty context) is kept under the test named "".
  const testName = (test) => test.name || "(outside any test)";
  const testLink = (test, cls) => link(testName(test), "test/" + test.index, cls);

  // Code: the distinct (file, covered lines) segments; each test has at most one per file, and most tests share
  // most of theirs. Numbers come as runs: [start, length, gap, length, ...], each start after the run before.
  function expandRuns(numbers, offset) {
    const runs = [];
    let end = 0;
    for (let i = offset; i < numbers.length; i += 2) {
      const first = end + numbers[i];
      end = first + numbers[i + 1] - 1;
      runs.push([first, end]);
    }
    return runs;
  }
  const segments = (DATA.segments || []).map((entry) => ({ file: entry[0], entry, runs: null, lines: 0, tests: [] }));
  function runsOf(segment) {
    if (!segment.runs) {
      segment.runs = expandRuns(segment.entry, 1);
      segment.lines = lineCount(segment.runs);
    }
    return segment.runs;
  }
  let fileIndex = null; // file -> its segments, each knowing its tests
  function segmentsByFile() {
    if (fileIndex) return fileIndex;
    fileIndex = files.map(() => []);
    for (const segment of segments) fileIndex[segment.file].push(segment);
    for (const test of tests) for (const number of testSegments(test)) segments[number].tests.push(test.index);
    return fileIndex;
  }
  function testSegments(test) {
    if (!test.segs) {
      test.segs = [];
      if (test.code) for (const [a, b] of expandRuns(test.code.segments, 0)) for (let n = a; n <= b; n++) test.segs.push(n);
    }
    return test.segs;
  }
  const lineCount = (runs) => runs.reduce((sum, [a, b]) => sum + b - a + 1, 0);
  function testLines(test) {
    if (test.lineTotal === undefined) {
      test.lineTotal = testSegments(test).reduce((sum, number) => (runsOf(segments[number]), sum + segments[number].lines), 0);
    }
    return test.lineTotal;
  }
  let totalLines = null;
  function linesCovered() {
    if (totalLines === null) totalLines = fileRows().reduce((sum, row) => sum + row.lines, 0);
    return totalLines;
  }
  const spans = (runs) => runs.map(([a, b]) => (a === b ? String(a) : a + "–" + b)).join(", ");
  function hitsText(count, successful) {
    if (count === successful) return fmt(count);
    if (!successful) return el("span", { class: "badge warn", title: "every hit was answered 4xx/5xx or had no status" },
      fmt(count) + ", none successful");
    return fmt(count) + " (" + fmt(count - successful) + " unsuccessful)";
  }
  const when = (time) => (time ? time.slice(0, 19).replace("T", " ") : "–");
  const howText = (how) => HOW_WORDS.filter(([bit]) => how & bit).map(([, word]) => word).join(", ");

  // An endpoint's status under the filters: conformance-tested needs a direct hit by a [Conformance] test's
  // own e2e.test client (as every report counts it); tested is any hit by a test, indirect ones when shown.
  function statusOf(endpoint) {
    let tested = false;
    for (const [t, allWays, ok] of endpoint.hits) {
      const test = tests[t];
      const how = filters.successOnly ? ok : allWays;
      if (filters.conformanceOnly && !test.conformance) continue;
      if (test.conformance && (how & HOW.e2e)) return "conf";
      if (how & (HOW.e2e | HOW.other) || (filters.indirect && how & (HOW.namespace | HOW.window))) tested = true;
    }
    return tested ? "tested" : "untested";
  }
  const shown = () => endpoints.filter((endpoint) => !filters.eligibleOnly || endpoint.eligible);

  // ---- header, summary, tabs ----
  function header() {
    const line = document.getElementById("run-line");
    line.replaceChildren();
    if (DATA.empty) { line.append("no runs yet"); return; }
    const live = DATA.live;
    if (live && live.runs.length > 1) {
      const runs = el("select", { id: "run-select", "aria-label": "run",
        onchange: (event) => { location.search = "?run=" + encodeURIComponent(event.target.value); } },
      live.runs.map((name) => el("option", { value: name, selected: name === DATA.run }, name)));
      const base = el("select", { id: "base-select", "aria-label": "compare with",
        onchange: (event) => {
          const query = "?run=" + encodeURIComponent(DATA.run);
          location.search = event.target.value ? query + "&base=" + encodeURIComponent(event.target.value) : query;
        } },
      el("option", { value: "" }, "no comparison"),
      live.runs.filter((name) => name !== DATA.run).map((name) => el("option",
        { value: name, selected: DATA.diff && name === DATA.diff.base }, "compared with " + name)));
      line.append("run ", runs, " ", base);
    } else {
      line.append("run ", el("strong", {}, DATA.run));
      if (DATA.diff) line.append(" compared with ", el("strong", {}, DATA.diff.base));
    }
    if (DATA.catalogue) {
      line.append(el("span", { class: "muted", title: DATA.catalogue }, " · " + DATA.catalogue.split("/").pop()));
    }
    line.append(el("span", { class: "muted" }, " · made " + DATA.generated.slice(0, 19).replace("T", " ") + " UTC"));
  }

  function summary() {
    const box = document.getElementById("summary");
    box.replaceChildren();
    if (DATA.empty) return;
    const counts = { conf: 0, tested: 0, untested: 0 };
    const eligible = endpoints.filter((endpoint) => endpoint.eligible);
    let eligibleConf = 0;
    for (const endpoint of endpoints) {
      const status = statusOf(endpoint);
      counts[status] += 1;
      if (endpoint.eligible && status === "conf") eligibleConf += 1;
    }
    const codeTests = tests.filter((test) => test.code);
    const lines = linesCovered();
    const card = (label, value, note, cls) => el("div", { class: "card " + (cls || "") },
      el("div", { class: "value" }, value), el("div", { class: "label" }, label), el("div", { class: "note" }, note));
    box.append(
      card("eligible endpoints conformance-tested", pct(eligibleConf, eligible.length),
        fmt(eligibleConf) + " of " + fmt(eligible.length), "lead"),
      card("endpoints conformance-tested", fmt(counts.conf), "of " + fmt(endpoints.length), "conf"),
      card("endpoints tested, not by conformance", fmt(counts.tested), filters.indirect ? "incl. indirect hits" : "direct hits",
        "tested"),
      card("endpoints untested", fmt(counts.untested), pct(counts.untested, endpoints.length), "untested"),
      card("tests", fmt(tests.filter((test) => test.name).length), fmt(tests.filter((test) => test.conformance).length) + " conformance"),
      card("lines covered", fmt(lines), codeTests.length ? "by " + fmt(codeTests.filter((t) => t.name).length) + " tests, " +
        fmt(files.length) + " files" : "no code coverage"),
    );
  }

  const TABS = [["endpoints", "Endpoints"], ["tests", "Tests"], ["code", "Code"], ["diff", "Diff"]];
  function tabs(current) {
    const nav = document.getElementById("tabs");
    nav.replaceChildren();
    if (DATA.empty) return;
    for (const [key, label] of TABS) {
      if (key === "diff" && !DATA.diff) continue;
      nav.append(link(label, key, key === current ? "tab active" : "tab"));
    }
  }

  function filterBar(options) {
    const box = el("div", { class: "filters" });
    const toggle = (key, label, title) => box.append(el("label", { title },
      el("input", { type: "checkbox", id: "filter-" + key, checked: filters[key],
        onchange: (event) => { filters[key] = event.target.checked; render(); } }), " " + label));
    if (options.includes("eligibleOnly")) toggle("eligibleOnly", "eligible only",
      "only endpoints eligible for conformance: stable, not deprecated, not on the ineligible list");
    if (options.includes("conformanceOnly")) toggle("conformanceOnly", "conformance tests only",
      "count only hits by [Conformance] tests");
    if (options.includes("indirect")) toggle("indirect", "indirect hits",
      "count what controllers did in a test's namespace or inside its markers");
    if (options.includes("successOnly")) toggle("successOnly", "successful hits only",
      "count only hits answered 1xx-3xx (a 404 from a clean-up delete is still a hit otherwise)");
    return box;
  }
  function legend() {
    return el("div", { class: "legend" }, Object.entries(STATUS_NAMES).map(([key, name]) =>
      el("span", { class: "key" }, el("span", { class: "swatch " + key }), name)));
  }

  // ---- endpoints: the sunburst ----
  function hierarchy(list) {
    const root = { name: "all endpoints", key: "", children: new Map(), endpoints: [], depth: 0 };
    for (const endpoint of list) {
      let node = root;
      const path = [endpoint.level, endpoint.group, endpoint.kind];
      path.forEach((name, depth) => {
        if (!node.children.has(name)) {
          node.children.set(name, { name, key: node.key + "/" + name, children: new Map(), endpoints: [],
            depth: depth + 1, parent: node });
        }
        node = node.children.get(name);
      });
      node.endpoints.push(endpoint);
    }
    const order = { conf: 0, tested: 1, untested: 2 };
    (function finish(node) {
      node.counts = { conf: 0, tested: 0, untested: 0 };
      const kids = [...node.children.values()];
      if (node.depth === 0) kids.sort((a, b) => LEVELS.indexOf(a.name) - LEVELS.indexOf(b.name));
      else kids.sort((a, b) => a.name.localeCompare(b.name));
      node.kids = kids;
      for (const kid of kids) {
        finish(kid);
        for (const key in node.counts) node.counts[key] += kid.counts[key];
      }
      for (const endpoint of node.endpoints) {
        endpoint.status = statusOf(endpoint);
        node.counts[endpoint.status] += 1;
      }
      node.endpoints.sort((a, b) => order[a.status] - order[b.status] || a.id.localeCompare(b.id));
      node.size = node.counts.conf + node.counts.tested + node.counts.untested;
    })(root);
    return root;
  }
  function findNode(root, key) {
    let node = root;
    for (const name of key.split("/").slice(1)) {
      if (!node.children.has(name)) return root;
      node = node.children.get(name);
    }
    return node;
  }
  const COLOURS = { conf: [47, 158, 68], tested: [240, 180, 41], untested: [222, 226, 230] };
  function mix(node) {
    // Inner rings: grey shading to green with the share of conformance-tested endpoints under them.
    const share = node.size ? node.counts.conf / node.size : 0;
    const [a, b] = [COLOURS.untested, COLOURS.conf];
    return "rgb(" + a.map((value, i) => Math.round(value + (b[i] - value) * share)).join(",") + ")";
  }
  function arcPath(a0, a1, r0, r1) {
    if (a1 - a0 >= 2 * Math.PI - 1e-6) {
      // A whole ring: two half arcs (one arc command cannot start and end at the same point).
      return arcPath(a0, a0 + Math.PI, r0, r1) + arcPath(a0 + Math.PI, a1, r0, r1);
    }
    const large = a1 - a0 > Math.PI ? 1 : 0;
    const p = (r, a) => (r * Math.sin(a)).toFixed(2) + "," + (-r * Math.cos(a)).toFixed(2);
    return "M" + p(r1, a0) + "A" + r1 + "," + r1 + " 0 " + large + " 1 " + p(r1, a1) +
      "L" + p(r0, a1) + "A" + r0 + "," + r0 + " 0 " + large + " 0 " + p(r0, a0) + "Z";
  }
  function nodeHash(node) { return "endpoints" + node.key.split("/").map(encodeURIComponent).join("/"); }

  function sunburst(root, focus, selected) {
    const rings = 4 - focus.depth, size = 560, hole = 70, ring = (size / 2 - hole - 4) / rings;
    const chart = svg("svg", { viewBox: `${-size / 2} ${-size / 2} ${size} ${size}`, class: "sunburst",
      role: "img", "aria-label": "endpoint coverage by level, group, kind and endpoint" });
    const tip = document.getElementById("tooltip");
    const show = (event, lines) => {
      tip.replaceChildren(...lines.map((text, i) => el(i ? "div" : "strong", {}, text)));
      tip.hidden = false;
      tip.style.left = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
      tip.style.top = (event.clientY + 14) + "px";
    };
    const hide = () => { tip.hidden = true; };
    function draw(node, a0, a1, depth) {
      if (depth > rings || !node.size) return;
      const r0 = hole + (depth - 1) * ring, r1 = r0 + ring - 1;
      if (depth >= 1) {
        const path = svg("path", { d: arcPath(a0, a1, r0, r1), fill: mix(node), class: "arc",
          "data-key": node.key });
        path.addEventListener("mousemove", (event) => show(event, [node.name, describe(node)]));
        path.addEventListener("mouseleave", hide);
        path.addEventListener("click", () => { hide(); location.hash = nodeHash(node); });
        chart.append(path);
        label(node.name, a0, a1, (r0 + r1) / 2);
      }
      let angle = a0;
      const unit = (a1 - a0) / node.size;
      for (const kid of node.kids) {
        draw(kid, angle, angle + kid.size * unit, depth + 1);
        angle += kid.size * unit;
      }
      if (depth + 1 > rings) return;
      const r = hole + depth * ring;
      for (const endpoint of node.endpoints) {
        const b = angle + unit;
        const path = svg("path", { d: arcPath(angle, b, r, r + ring - 1), class: "arc leaf " + endpoint.status +
          (selected === endpoint ? " selected" : ""), "data-endpoint": endpoint.id });
        path.addEventListener("mousemove", (event) => show(event, [endpoint.id, endpoint.method + " " + endpoint.path,
          STATUS_NAMES[endpoint.status] + (endpoint.eligible ? " · eligible" : "")]));
        path.addEventListener("mouseleave", hide);
        path.addEventListener("click", () => { hide(); location.hash = "endpoint/" + encodeURIComponent(endpoint.id); });
        chart.append(path);
        angle = b;
      }
    }
    function label(text, a0, a1, radius) {
      // Along the arc, upright, cut to the room the arc has (about 6.6 px a character).
      const room = Math.floor((a1 - a0) * radius / 6.6);
      if (room < 3) return;
      const mid = (a0 + a1) / 2, x = (radius * Math.sin(mid)).toFixed(1), y = (-radius * Math.cos(mid)).toFixed(1);
      let degrees = mid * 180 / Math.PI;
      if (degrees > 90 && degrees < 270) degrees -= 180;
      const node = svg("text", { x, y, class: "arc-label", transform: `rotate(${degrees.toFixed(1)} ${x} ${y})` });
      node.textContent = text.length > room ? text.slice(0, room - 1) + "…" : text;
      chart.append(node);
    }
    draw(focus, 0, 2 * Math.PI, 0);
    const centre = svg("circle", { r: hole - 4, class: "centre" });
    centre.addEventListener("click", () => { location.hash = focus.parent ? nodeHash(focus.parent) : "endpoints"; });
    chart.append(centre);
    const title = svg("text", { y: -6, class: "centre-title" });
    title.textContent = focus.depth ? focus.name : "all";
    const sub = svg("text", { y: 14, class: "centre-sub" });
    sub.textContent = pct(focus.counts.conf, focus.size) + " conf.";
    chart.append(title, sub);
    if (focus.parent) {
      const up = svg("text", { y: 32, class: "centre-sub" });
      up.textContent = "↑ up";
      chart.append(up);
    }
    return chart;
  }
  const describe = (node) => `${fmt(node.counts.conf)} conformance-tested, ${fmt(node.counts.tested)} tested, ` +
    `${fmt(node.counts.untested)} untested of ${fmt(node.size)}`;
  function bar(counts, total) {
    return el("div", { class: "bar", title: Object.keys(STATUS_NAMES).map((k) => `${STATUS_NAMES[k]} ${counts[k]}`)
      .join(", ") }, ["conf", "tested", "untested"].map((key) =>
      el("span", { class: key, style: `width:${total ? (100 * counts[key] / total) : 0}%` })));
  }

  function endpointsView(view, key, selected) {
    if (!endpoints.length) {
      view.append(el("div", { class: "notice" }, DATA.problem || "The store holds no endpoint catalogue."));
      return;
    }
    if (DATA.unmapped) {
      view.append(el("div", { class: "notice warn" }, `${fmt(DATA.unmapped)} events are not mapped to endpoints yet ` +
        "(stored before the catalogue): run `auditcov remap`."));
    }
    const root = hierarchy(shown());
    const focus = selected ? findNode(root, "/" + [selected.level, selected.group].join("/"))
      : findNode(root, key || "");
    view.append(el("div", { class: "toolbar" }, filterBar(["eligibleOnly", "conformanceOnly", "indirect", "successOnly"]), legend()));
    const side = el("div", { class: "side" });
    view.append(el("div", { class: "split" }, el("div", { class: "chart" }, sunburst(root, focus, selected)), side));
    const crumbs = [];
    for (let node = focus; node; node = node.parent) crumbs.unshift(node);
    side.append(el("div", { class: "crumbs" }, crumbs.map((node, i) => [i ? " › " : "",
      link(node.depth ? node.name : "all endpoints", nodeHash(node))])));
    if (selected) { endpointDetail(side, selected); return; }
    side.append(el("h2", {}, focus.depth ? focus.name : "All endpoints"), el("p", { class: "muted" }, describe(focus)),
      bar(focus.counts, focus.size));
    const rows = focus.kids.length
      ? focus.kids.map((kid) => el("tr", {}, el("td", {}, link(kid.name, nodeHash(kid))),
        el("td", { class: "wide" }, bar(kid.counts, kid.size)), el("td", { class: "num" }, pct(kid.counts.conf, kid.size)),
        el("td", { class: "num" }, fmt(kid.size))))
      : focus.endpoints.map((endpoint) => el("tr", {},
        el("td", {}, link(endpoint.id, "endpoint/" + encodeURIComponent(endpoint.id), "mono")),
        el("td", {}, badge(STATUS_NAMES[endpoint.status], endpoint.status)),
        el("td", { class: "num" }, endpoint.eligible ? "eligible" : ""), el("td", { class: "num" }, endpoint.hits.length + " tests")));
    const head = focus.kids.length ? ["", "", "conf.", "endpoints"] : ["endpoint", "status", "", "tests"];
    side.append(el("table", { class: "list" }, el("thead", {}, el("tr", {}, head.map((h, i) =>
      el("th", { class: i > 1 ? "num" : "" }, h)))), el("tbody", {}, rows)));
    if (DATA.unmatched && Object.keys(DATA.unmatched).length && !focus.depth) {
      side.append(el("h3", {}, "Events that matched no endpoint"), el("table", { class: "list" }, el("tbody", {},
        Object.entries(DATA.unmatched).map(([reason, count]) => el("tr", {}, el("td", {}, reason),
          el("td", { class: "num" }, fmt(count)))))));
    }
  }

  function endpointDetail(box, endpoint) {
    box.append(el("h2", { class: "mono" }, endpoint.id),
      el("p", {}, el("span", { class: "method" }, endpoint.method), " ", el("code", {}, endpoint.path)),
      el("p", {}, badge(STATUS_NAMES[statusOf(endpoint)], statusOf(endpoint)), " ",
        badge(endpoint.level, "plain"), " ", endpoint.eligible ? badge("conformance-eligible", "plain") : "",
        endpoint.pending ? badge("pending", "plain") : ""));
    if (endpoint.all) {
      const [count, first, last, status] = endpoint.all;
      box.append(el("p", { id: "endpoint-hits" }, `${fmt(count)} ${count === 1 ? "hit" : "hits"} from any client (`,
        Object.entries(status).map(([cls, n]) => `${cls}: ${fmt(n)}`).join(", "), `), first ${when(first)}, ` +
        `last ${when(last)} UTC`));
    }
    const rows = endpoint.hits.slice().sort((a, b) => tests[a[0]].name.localeCompare(tests[b[0]].name));
    box.append(el("h3", {}, `Tests that hit it (${rows.length})`));
    if (!rows.length) { box.append(el("p", { class: "muted" }, "No test hit this endpoint.")); return; }
    box.append(table(["test", "how", "hits", ""], rows.map(([t, how, , count, successful]) => [
      testLink(tests[t]), howText(how), hitsText(count, successful),
      tests[t].conformance ? badge("conformance", "conf") : ""])));
  }

  function table(head, rows, cls) {
    return el("table", { class: "list " + (cls || "") }, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell) => el("td", {}, cell))))));
  }

  // ---- tests ----
  let testQuery = "";
  function testsView(view) {
    view.append(el("div", { class: "toolbar" }, el("input", { type: "search", id: "test-search", value: testQuery,
      placeholder: "filter tests by name", oninput: (event) => { testQuery = event.target.value; fill(); } }),
    filterBar(["conformanceOnly"])));
    const body = el("tbody");
    view.append(el("table", { class: "list tests" }, el("thead", {}, el("tr", {}, el("th", {}, "test"), el("th", {}, ""),
      el("th", { class: "num" }, "endpoints"), el("th", { class: "num" }, "lines"))), body));
    function fill() {
      const words = testQuery.toLowerCase();
      const rows = tests.filter((test) => (!filters.conformanceOnly || test.conformance) &&
        test.name.toLowerCase().includes(words));
      body.replaceChildren(...rows.map((test) => el("tr", {}, el("td", {}, testLink(test)),
        el("td", {}, test.conformance ? badge("conformance", "conf") : ""), el("td", { class: "num" }, fmt(test.hits.length)),
        el("td", { class: "num" }, test.code ? fmt(testLines(test)) : "–"))));
      if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No test matches.")));
    }
    fill();
  }

  function testView(view, test) {
    view.append(el("div", { class: "crumbs" }, link("Tests", "tests"), " › "),
      el("h2", { id: "test-name" }, testName(test)), el("p", {}, test.conformance ? badge("conformance", "conf") : "",
        " ", fmt(test.hits.length) + " endpoints · " + (test.code ? fmt(testLines(test)) + " lines in " +
        fmt(testSegments(test).length) + " files" : "no code coverage")));
    const code = test.code;
    if (code && code.window) {
      const [start, end, source] = code.window;
      const sameDay = start.slice(0, 10) === end.slice(0, 10);
      view.append(el("p", { class: "muted" }, `ran ${when(start)} – ${when(end).slice(sameDay ? 11 : 0)} UTC ` +
        `(window from its ${source})`));
    }
    if (code && code.incomplete) {
      view.append(el("div", { class: "notice warn" }, "Incomplete: a process's delta is left out (below), so this " +
        "test ran more code than shown."));
    }
    if (code && code.coarse) {
      view.append(el("div", { class: "notice" }, "Coarse: some lines come from a profile file that lags the test's " +
        "boundaries by its flush interval."));
    }
    if (code && code.first_hit_only) {
      view.append(el("div", { class: "notice" }, "Set-mode counters: a line shows only when this test was the first " +
        "to run it in its process."));
    }
    if (code && code.shared_with.length) {
      view.append(el("div", { class: "notice" }, "Its window overlaps ", code.shared_with.map((name, i) => [i ? ", " : "",
        testByName.has(name) ? link(name, "test/" + testByName.get(name).index) : name]),
      ": code that ran in the overlap is in each of them."));
    }
    for (const problem of (code ? code.problems : [])) view.append(el("div", { class: "notice warn" }, problem));
    const columns = el("div", { class: "columns" });
    view.append(columns);
    const rows = test.hits.slice().sort((a, b) => endpoints[a[0]].id.localeCompare(endpoints[b[0]].id));
    columns.append(el("section", { id: "test-endpoints" }, el("h3", {}, `Endpoints (${rows.length})`),
      rows.length ? table(["endpoint", "method", "how", "hits"], rows.map(([e, how, , count, successful]) => [
        link(endpoints[e].id, "endpoint/" + encodeURIComponent(endpoints[e].id), "mono"),
        el("span", { class: "method" }, endpoints[e].method), howText(how), hitsText(count, successful)])) :
        el("p", { class: "muted" }, "This test hit no endpoint.")));
    const fileRows = testSegments(test).map((number) => segments[number])
      .sort((a, b) => files[a.file].localeCompare(files[b.file]));
    columns.append(el("section", { id: "test-files" }, el("h3", {}, `Code (${fileRows.length} files)`),
      fileRows.length ? table(["file", "lines", "covered"], fileRows.map((segment) => {
        const runs = runsOf(segment);
        return [link(shortFile(files[segment.file]), `file/${segment.file}/${test.index}`, "mono"),
          el("span", { class: "num" }, fmt(lineCount(runs))), el("span", { class: "spans" }, spans(runs))];
      }), "files") : el("p", { class: "muted" }, "No code coverage for this test.")));
  }
  // Files are shown relative to the folder they all share (the full name is in the file's own view).
  const common = files.length > 1 ? files.reduce((prefix, name) => {
    while (!name.startsWith(prefix)) prefix = prefix.slice(0, prefix.lastIndexOf("/", prefix.length - 2) + 1);
    return prefix;
  }, files[0].slice(0, files[0].lastIndexOf("/") + 1)) : "";
  const shortFile = (name) => name.slice(common.length);

  // ---- code: files, and a file's lines with the tests that ran them ----
  function mergeRuns(runs) {
    const sorted = runs.slice().sort((a, b) => a[0] - b[0]);
    const merged = [];
    for (const [a, b] of sorted) {
      const last = merged[merged.length - 1];
      if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
      else merged.push([a, b]);
    }
    return merged;
  }
  let fileQuery = "", fileTable = null;
  function fileRows() {
    if (!fileTable) {
      const index = segmentsByFile();
      fileTable = files.map((name, i) => ({ i, name, tests: index[i].reduce((sum, segment) => sum + segment.tests.length, 0),
        lines: lineCount(mergeRuns(index[i].flatMap(runsOf))) }));
      fileTable.sort((a, b) => a.name.localeCompare(b.name));
    }
    return fileTable;
  }
  function codeView(view) {
    if (!files.length) { view.append(el("div", { class: "notice" }, "No test in this run has code coverage.")); return; }
    const rows = fileRows();
    const body = el("tbody");
    view.append(el("div", { class: "toolbar" }, el("input", { type: "search", id: "file-search", value: fileQuery,
      placeholder: "filter files", oninput: (event) => { fileQuery = event.target.value; fill(); } })),
    el("table", { class: "list" }, el("thead", {}, el("tr", {}, el("th", {}, "file"),
      el("th", { class: "num" }, "lines covered"), el("th", { class: "num" }, "tests"))), body));
    function fill() {
      const words = fileQuery.toLowerCase();
      const chosen = rows.filter((row) => row.name.toLowerCase().includes(words));
      body.replaceChildren(...chosen.slice(0, 2000).map((row) => el("tr", {},
        el("td", {}, link(shortFile(row.name), "file/" + row.i, "mono")), el("td", { class: "num" }, fmt(row.lines)),
        el("td", { class: "num" }, fmt(row.tests)))));
      if (chosen.length > 2000) body.append(el("tr", {}, el("td", { colspan: 3, class: "muted" },
        `${fmt(chosen.length - 2000)} more: filter to see them`)));
    }
    fill();
  }

  function fileView(view, file, mark) {
    const shared = segmentsByFile()[file] || [];
    // Sweep the file's segments: between two edges, the lines ran under the tests of the segments open there (a
    // test has one segment per file, so no test is counted twice).
    const edges = new Map();
    const edge = (line, segment, delta) => {
      if (!edges.has(line)) edges.set(line, []);
      edges.get(line).push([segment, delta]);
    };
    for (const segment of shared) for (const [a, b] of runsOf(segment)) { edge(a, segment, 1); edge(b + 1, segment, -1); }
    const open = new Set();
    const rows = [];
    let start = null;
    for (const line of [...edges.keys()].sort((a, b) => a - b)) {
      if (open.size && start !== null) rows.push([start, line - 1, [...open].flatMap((segment) => segment.tests)]);
      for (const [segment, delta] of edges.get(line)) {
        if (delta > 0) open.add(segment); else open.delete(segment);
      }
      start = line;
    }
    const testCount = shared.reduce((sum, segment) => sum + segment.tests.length, 0);
    const crumbs = [link("Code", "code"), " › "];
    if (mark !== undefined) crumbs.unshift(testLink(tests[mark]), " · ");
    view.append(el("div", { class: "crumbs" }, crumbs), el("h2", { class: "mono", id: "file-name" }, files[file]),
      el("p", { class: "muted" }, `${fmt(lineCount(rows))} lines covered by ${fmt(testCount)} tests`));
    const own = rows.filter(([, , ts]) => ts.includes(mark));
    if (mark !== undefined) {
      view.append(el("div", { class: "filters" }, el("label", {}, el("input", { type: "checkbox", id: "filter-ownLines",
        checked: filters.ownLines, onchange: (event) => { filters.ownLines = event.target.checked; render(); } }),
      ` only the ${fmt(lineCount(own))} lines this test ran`)));
    }
    const body = (mark !== undefined && filters.ownLines ? own : rows).map(([a, b, ts]) => {
      ts.sort((x, y) => (y === mark) - (x === mark) || tests[x].name.localeCompare(tests[y].name));
      const names = ts.map((t) => el("div", {}, testLink(tests[t], t === mark ? "marked" : "")));
      const listed = names.length <= 3 ? names : [names.slice(0, 2), el("details", {}, el("summary", {},
        `and ${names.length - 2} more`), names.slice(2))];
      // With every line shown, those the test ran stand out.
      return el("tr", { class: ts.includes(mark) && !filters.ownLines ? "hit" : "" }, el("td", { class: "num mono" }, a === b ? a : a + "–" + b),
        el("td", { class: "num" }, ts.length), el("td", { class: "names" }, listed));
    });
    view.append(el("table", { class: "list lines" }, el("thead", {}, el("tr", {}, el("th", { class: "num" }, "lines"),
      el("th", { class: "num" }, "tests"), el("th", {}, "ran by"))), el("tbody", {}, body)));
  }

  // ---- the diff against another run ----
  function diffView(view) {
    const diff = DATA.diff;
    const [before, after] = [diff.totals.base, diff.totals.head];
    const change = (a, b) => `${fmt(a)} → ${fmt(b)} (${b >= a ? "+" : "−"}${fmt(Math.abs(b - a))})`;
    view.append(el("h2", {}, `${diff.head} compared with ${diff.base}`),
      el("p", { id: "diff-totals" }, `endpoints tested: ${change(before.tested, after.tested)} · ` +
        `eligible endpoints conformance-tested: ${change(before.conformance_tested_eligible,
          after.conformance_tested_eligible)}`));
    const endpointList = (ids) => ids.length ? el("ul", { class: "plain" }, ids.map((id) => el("li", {},
      endpointById.has(id) ? link(id, "endpoint/" + encodeURIComponent(id), "mono") : el("span", { class: "mono" }, id))))
      : el("p", { class: "muted" }, "none");
    const columns = el("div", { class: "columns four" });
    for (const [key, side, label] of [["endpoints", "gained", "Endpoints now tested"],
      ["endpoints", "lost", "Endpoints no longer tested"], ["conformance", "gained", "Now conformance-tested (eligible)"],
      ["conformance", "lost", "No longer conformance-tested (eligible)"]]) {
      const ids = diff[key][side];
      columns.append(el("section", { id: `diff-${key}-${side}` }, el("h3", {}, `${label} (${ids.length})`),
        endpointList(ids)));
    }
    view.append(columns);
    const testCell = (name) => (testByName.has(name) ? testLink(testByName.get(name)) : name || "(outside any test)");
    const { added, removed, changed, unchanged } = diff.tests;
    view.append(el("h3", {}, `Tests that changed (${changed.length}; ${fmt(unchanged)} unchanged)`));
    view.append(changed.length ? table(["test", "endpoints gained", "endpoints lost", "lines"],
      changed.map((row) => [testCell(row.test), endpointLinks(row.endpoints.gained), endpointLinks(row.endpoints.lost),
        row.lines === null ? el("span", { class: "muted" }, "no code coverage in both runs") : lineChanges(row.lines)]),
      "diff-tests") : el("p", { class: "muted" }, "No test changed."));
    for (const [rows, label] of [[added, "Tests only in " + diff.head], [removed, "Tests only in " + diff.base]]) {
      view.append(el("h3", {}, `${label} (${rows.length})`), rows.length ? table(["test", "endpoints"],
        rows.map((row) => [testCell(row.test), fmt(row.endpoints.length)])) : el("p", { class: "muted" }, "none"));
    }
  }
  function endpointLinks(ids) {
    return ids.map((id, i) => [i ? ", " : "", endpointById.has(id) ? link(id, "endpoint/" + encodeURIComponent(id), "mono")
      : el("span", { class: "mono" }, id)]);
  }
  function lineChanges(lines) {
    const files = Object.entries(lines.files);
    if (!files.length) return el("span", { class: "muted" }, "same lines");
    return el("details", {}, el("summary", {}, `+${fmt(lines.gained)} / −${fmt(lines.lost)} in ${files.length} files`),
      files.map(([file, change]) => el("div", { class: "diff-file" }, el("span", { class: "mono" }, shortFile(file)),
        change.gained.length ? el("div", { class: "gained mono" }, "+ " + spans(change.gained)) : "",
        change.lost.length ? el("div", { class: "lost mono" }, "− " + spans(change.lost)) : "")));
  }

  // ---- an empty store ----
  function emptyView(view) {
    view.append(el("div", { class: "empty" }, el("h2", {}, "No audit events yet"),
      el("p", {}, "This sink's store is empty. Point a kube-apiserver at it; this page shows the coverage as soon " +
        "as events arrive (reload it)."), el("pre", { id: "setup" }, DATA.setup)));
  }

  // ---- routing: the hash says what to show, so every view has an address and the back button works ----
  function render() {
    const view = document.getElementById("view");
    view.replaceChildren();
    header();
    let parts;
    try { parts = location.hash.slice(1).split("/").map(decodeURIComponent); } catch (error) { parts = [""]; }
    const [route, ...rest] = parts;
    if (DATA.empty) { tabs(""); summary(); emptyView(view); view.dataset.ready = "1"; return; }
    const tab = route === "test" ? "tests" : route === "file" ? "code" : route === "endpoint" ? "endpoints" :
      TABS.some(([key]) => key === route) ? route : "endpoints";
    tabs(tab);
    summary();
    if (route === "test" && tests[+rest[0]]) testView(view, tests[+rest[0]]);
    else if (route === "file" && files[+rest[0]] !== undefined) {
      fileView(view, +rest[0], rest[1] !== undefined && tests[+rest[1]] ? +rest[1] : undefined);
    } else if (route === "endpoint") {
      const id = rest.join("/");
      const endpoint = endpointById.get(id);
      endpointsView(view, "", endpoint);
    } else if (tab === "tests") testsView(view);
    else if (tab === "code") codeView(view);
    else if (tab === "diff" && DATA.diff) diffView(view);
    else endpointsView(view, route === "endpoints" ? "/" + rest.join("/") : "");
    view.dataset.ready = "1";
  }
  window.addEventListener("hashchange", () => { render(); window.scrollTo(0, 0); });
  render();
})();
