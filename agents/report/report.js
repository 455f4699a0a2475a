"use strict";
// MedVR trajectory report: renders the episode list, details, groups and changes from the JSON blocks of this page.
// Untrusted text (questions, model output) is always set with textContent, never parsed as HTML.
(function () {
  const SVGNS = "http://www.w3.org/2000/svg";
  const INDEX = JSON.parse(document.getElementById("index").textContent);
  const EPISODES = INDEX.episodes;
  const PALETTE = INDEX.palette;
  const cache = new Map();

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }
  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function block(id) {
    if (!cache.has(id)) {
      const node = document.getElementById(id);
      cache.set(id, node ? (node.type === "application/json" ? JSON.parse(node.textContent) : node.textContent) : null);
    }
    return cache.get(id);
  }
  function colour(viewIndex) { return PALETTE[(viewIndex - 1) % PALETTE.length]; }
  function fmt(x, digits) { return x == null ? "–" : Number(x).toFixed(digits == null ? 2 : digits); }

  // An image with its boxes drawn in original-image pixels (the SVG's viewBox is the original's size).
  function figure(uri, w, h, width, boxes, evalBoxes, labels, extra) {
    const height = Math.round(width * h / w);
    const fig = el("div", { class: "fig", style: `width:${width}px;height:${height}px` });
    if (uri) fig.append(el("img", { src: uri, width: width, height: height, alt: "original image", decoding: "async" }));
    if (extra) fig.append(extra);
    const svg = svgEl("svg", { class: "overlay", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
    const fs = Math.max(w, h) * (width < 150 ? 0.09 : 0.05);
    for (const b of evalBoxes || []) {
      svg.append(svgEl("rect", { x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1], fill: "none",
        stroke: INDEX.eval_colour, "stroke-width": 2, "stroke-dasharray": "5 3", "vector-effect": "non-scaling-stroke",
        class: "evalbox" }));
    }
    for (const b of boxes) {
      const c = b[5] || colour(b[4]);
      svg.append(svgEl("rect", { x: b[0], y: b[1], width: b[2] - b[0], height: b[3] - b[1], fill: "none",
        stroke: c, "stroke-width": width < 150 ? 1.5 : 2, "vector-effect": "non-scaling-stroke", class: "lookbox",
        "data-view": b[4] }));
      if (labels) {
        const t = svgEl("text", { x: b[0] + fs * 0.25, y: b[1] + fs, fill: c, "font-size": fs, "font-weight": 700,
          "font-family": "system-ui,sans-serif", stroke: "#000", "stroke-width": fs * 0.06 });
        t.textContent = b[6] || String(b[4]);
        svg.append(t);
      }
    }
    fig.append(svg);
    return fig;
  }

  function tags(e) {
    const src = INDEX.sources[e.src];
    return [
      el("span", { class: "tag " + (e.correct ? "ok" : "bad"), text: e.correct ? "correct" : "wrong" }),
      INDEX.runs.length > 1 ? el("span", { class: "tag", text: "run " + INDEX.runs[e.run].short }) : null,
      el("span", { class: "tag", text: src.label }),
      e.qtype ? el("span", { class: "tag", text: e.qtype }) : null,
      el("span", { class: "tag", text: `${e.zooms} zoom${e.zooms === 1 ? "" : "s"} · ${e.steps} steps` }),
      e.errors ? el("span", { class: "tag bad", text: `${e.errors} invalid` }) : null,
      e.iou != null ? el("span", { class: "tag", text: "IoU " + fmt(e.iou) }) : null,
      e.group != null ? el("span", { class: "tag", text: "group " + e.group }) : null,
    ];
  }

  function card(e) {
    const box = el("div", { class: "card" + (e.correct ? " correct" : ""), "data-id": e.id,
      "data-correct": e.correct ? "1" : "0" });
    const thumb = figure(INDEX.thumbs[e.img], e.w, e.h, 96, e.boxes, e.evalb, false);
    const head = el("div", { class: "head", title: "open / close this episode" }, thumb,
      el("div", { class: "text" },
        el("div", {}, el("b", { text: "#" + e.id + " " }), ...tags(e)),
        el("div", { class: "q", text: e.q }),
        el("div", {}, "answer: ", el("b", { text: e.ans || "(none)" }), "  ·  reference: ", el("span", { text: e.ref }),
          e.stop && e.stop !== "answered" ? el("span", { class: "err", text: "  ·  " + e.stop }) : null)));
    head.addEventListener("click", () => toggleDetail(box, e));
    box.append(head);
    return box;
  }

  function toggleDetail(container, e) {
    const open = container.querySelector(":scope > .detail");
    if (open) { open.remove(); return; }
    container.append(detail(e));
  }

  function detail(e) {
    const d = block("ep-" + e.id);
    const uri = block("im-" + e.img);
    const root = el("div", { class: "detail", "data-detail": e.id });
    if (d.load_error) root.append(el("div", { class: "warn", text: "image not loaded: " + d.load_error }));
    const s = d.sample;
    const info = el("table", { class: "kv" });
    const rows = [["question", s.question], ["options", (s.options || []).map((o, i) => String.fromCharCode(65 + i) + ". " + o).join("  ")],
      ["reference", s.answer], ["answer", e.ans], ["grade", d.grade ? `${d.grade.correct ? "correct" : "wrong"} (${d.grade.method || ""}, score ${fmt(d.grade.score)}` +
        (d.grade.predicted != null && d.grade.predicted !== e.ans ? `, read as "${d.grade.predicted}"` : "") + ")" : "ungraded"],
      ["stop", d.stop], ["return", fmt(d.total_reward, 3)], ["sample", s.sample_id],
      ["type", [s.answer_type, s.question_type, s.modality, s.organ].filter(Boolean).join(" · ")]];
    for (const [k, v] of rows) if (v) info.append(el("tr", {}, el("td", { text: k }), el("td", { text: String(v) })));
    const boxes = e.boxes;
    const big = figure(uri, e.w, e.h, Math.min(384, Math.round(384 * e.w / Math.max(e.w, e.h))), boxes, e.evalb, true);
    big.classList.add("orig");
    const legend = el("div", { class: "legend", text: "numbered boxes: the views the agent made, in order (colour = view)" +
      (e.evalb.length ? "; dashed: evaluation boxes (never shown to the agent)" : "") });
    const chart = el("div", {});
    chart.innerHTML = d.entropy_svg;  // generated by the report builder, with every label escaped
    root.append(el("div", { class: "top" }, el("div", {}, big, legend), el("div", {}, info, chart)));
    const strip = el("div", { class: "strip" });
    for (const v of d.views) {
      const img = v.uri ? el("img", { src: v.uri, alt: "view " + v.i, decoding: "async" }) : el("div", { text: "(no image)" });
      if (v.i > 0 && v.uri) img.style.borderColor = colour(v.i);
      strip.append(el("figure", {}, img, el("figcaption", { text: `view ${v.i} · ${v.tool}` + (v.i ? ` @ step ${v.step}` : "") + (v.filters ? " · filtered (not redrawn)" : "") })));
    }
    root.append(strip);
    const turns = el("table", { class: "turns" });
    for (const st of d.steps) {
      const raw = el("pre", { class: "raw" });
      for (const [kind, text] of st.seg) raw.append(el("span", { class: "seg-" + kind, text: text }));
      const facts = el("div", {});
      if (st.error) facts.append(el("div", { class: "err", text: `error ${st.error.code}: ${st.error.message || ""}` }));
      if (st.feedback) facts.append(el("div", { class: "fb", text: "feedback: " + st.feedback }));
      if (st.new_view != null) facts.append(el("div", { text: `→ view ${st.new_view}` + (st.box ? ` box [${st.box.join(", ")}]` : "") }));
      facts.append(el("div", { text: `H ${fmt(st.entropy)}` + (st.tool_entropy != null ? ` · tool H ${fmt(st.tool_entropy)}` : "") + (st.source ? ` (${st.source})` : "") }));
      const terms = Object.entries(st.reward).filter(([, v]) => v !== 0).map(([k, v]) => `${k} ${v > 0 ? "+" : ""}${fmt(v)}`);
      if (terms.length) facts.append(el("div", { text: "reward: " + terms.join(", ") }));
      turns.append(el("tr", {}, el("td", { class: "n", text: "step " + st.step }), el("td", {}, raw), el("td", { class: "info" }, facts)));
    }
    root.append(turns);
    return root;
  }

  // ------------------------------------------------------------------ episode list
  const state = { page: 0 };
  const controls = {};
  function options(values) { return ["all", ...values]; }
  function select(name, label, values, texts) {
    const node = el("select", { id: "f-" + name, "data-filter": name });
    values.forEach((v, i) => node.append(el("option", { value: v, text: texts ? texts[i] : v })));
    node.addEventListener("change", () => { state.page = 0; renderList(); });
    controls[name] = node;
    return el("label", {}, label + " ", node);
  }
  function unique(key) { return [...new Set(EPISODES.map(e => e[key]).filter(v => v !== "" && v != null))].sort(); }

  function filtered() {
    const f = Object.fromEntries(Object.entries(controls).map(([k, n]) => [k, n.value]));
    const text = (f.search || "").trim().toLowerCase();
    return EPISODES.filter(e =>
      (f.result === "all" || (f.result === "correct") === e.correct) &&
      (f.qtype === "all" || e.qtype === f.qtype) &&
      (f.zoomed === "all" || (f.zoomed === "yes") === (e.zooms > 0)) &&
      (!controls.agent || f.agent === "all" || String(e.src) === f.agent) &&
      (!controls.run || f.run === "all" || String(e.run) === f.run) &&
      (!text || e.q.toLowerCase().includes(text) || ("#" + e.id) === text || e.sid.toLowerCase().includes(text)));
  }

  function pager(count, pageSize, onPage, current) {
    const pages = Math.max(1, Math.ceil(count / pageSize));
    const go = p => () => onPage(Math.min(pages - 1, Math.max(0, p)));
    return el("div", { class: "pager" },
      el("button", { class: "first", onclick: go(0), text: "«" }),
      el("button", { class: "prev", onclick: go(current - 1), text: "‹ prev" }),
      el("span", { class: "pageinfo", text: `page ${current + 1} of ${pages} · ${count} episodes` }),
      el("button", { class: "next", onclick: go(current + 1), text: "next ›" }),
      el("button", { class: "last", onclick: go(pages - 1), text: "»" }));
  }

  function renderList() {
    const list = filtered();
    const size = INDEX.page_size;
    state.page = Math.min(state.page, Math.max(0, Math.ceil(list.length / size) - 1));
    const cards = document.getElementById("cards");
    cards.replaceChildren(...list.slice(state.page * size, (state.page + 1) * size).map(card));
    const setPage = p => { state.page = p; renderList(); };
    document.getElementById("pager-top").replaceChildren(pager(list.length, size, setPage, state.page));
    document.getElementById("pager-bottom").replaceChildren(pager(list.length, size, setPage, state.page));
  }

  function buildFilters() {
    const box = document.getElementById("filters");
    box.append(select("result", "result", ["all", "correct", "wrong"]));
    box.append(select("qtype", "question type", options(unique("qtype"))));
    box.append(select("zoomed", "zoomed", ["all", "yes", "no"]));
    if (INDEX.sources.length > 1) box.append(select("agent", "agent", ["all", ...INDEX.sources.map((_, i) => String(i))],
      ["all", ...INDEX.sources.map(s => s.label)]));
    if (INDEX.runs.length > 1) box.append(select("run", "run", ["all", "0", "1"], ["all", ...INDEX.runs.map(r => r.short + ": " + r.name)]));
    const search = el("input", { id: "f-search", type: "search", placeholder: "question text, #id or sample id" });
    search.addEventListener("input", () => { state.page = 0; renderList(); });
    controls.search = search;
    box.append(el("label", {}, "search ", search));
  }

  // ------------------------------------------------------------------ groups
  function groupView(k) {
    const g = block("grp-" + k);
    const uri = block("im-" + g.img);
    const boxes = [];
    g.members.forEach((m, i) => m.boxes.forEach(b => boxes.push([...b, m.index, INDEX.series[i % INDEX.series.length], "#" + m.index])));
    const mask = g.mask ? el("img", { class: "mask", src: g.mask, alt: "consensus mask" }) : null;
    const fig = figure(uri, g.w, g.h, Math.min(320, Math.round(320 * g.w / Math.max(g.w, g.h))), boxes, g.evalb, true, mask);
    const table = el("table", { class: "members" }, el("tr", {}, ...["#", "parent", "fork step", "correct", "zooms",
      "IoU (consensus)", "R_tool", "CCA case", "recorded IoU", "recorded R_tool", ""].map(t => el("th", { text: t }))));
    g.members.forEach((m, i) => {
      const open = m.episode != null ? el("button", { class: "link", text: "episode #" + m.episode,
        onclick: () => { if (location.hash === "#ep-" + m.episode) openFromHash(); else location.hash = "#ep-" + m.episode; } })
        : el("span", { text: "(not shown)" });
      table.append(el("tr", {}, el("td", { style: `color:${INDEX.series[i % INDEX.series.length]};font-weight:700`, text: "#" + m.index }),
        el("td", { text: m.parent == null ? "–" : "#" + m.parent }), el("td", { text: m.fork_step == null ? "–" : String(m.fork_step) + (m.fork_token != null ? ` (token ${m.fork_token})` : "") }),
        el("td", { text: m.correct ? "✓" : "✗" }), el("td", { text: String(m.boxes.length) }),
        el("td", { text: fmt(m.iou) }), el("td", { text: fmt(m.tool_reward) }), el("td", { text: m.case || "–" }),
        el("td", { text: fmt(m.rec_iou) }), el("td", { text: fmt(m.rec_tool_reward) }), el("td", {}, open)));
    });
    const tree = el("div", {});
    tree.innerHTML = g.tree_svg;  // generated by the report builder, labels escaped
    const root = el("div", { class: "group", "data-group": g.id },
      el("div", {}, el("b", { text: "group " + g.id + " · " }), el("span", { text: g.question }),
        el("span", { class: "note", text: "  reference: " + g.ref })));
    if (g.credit_error) root.append(el("div", { class: "warn", text: g.credit_error }));
    root.append(el("div", { class: "top" }, el("div", {}, fig, el("div", { class: "legend",
      text: "boxes: each rollout's footprint (colour = rollout); yellow: the consensus mask of the correct rollouts" })),
      el("div", {}, table, tree)));
    return root;
  }
  function renderGroups(page) {
    const box = document.getElementById("group-list");
    if (!box) return;
    const size = 5;
    const n = INDEX.groups;
    box.replaceChildren(...Array.from({ length: Math.min(size, n - page * size) }, (_, i) => groupView(page * size + i)));
    document.getElementById("group-pager").replaceChildren(pager(n, size, renderGroups, page));
    document.getElementById("group-pager").querySelector(".pageinfo").textContent = `page ${page + 1} of ${Math.max(1, Math.ceil(n / size))} · ${n} groups`;
  }

  // ------------------------------------------------------------------ changes between two runs
  function renderChanges(page) {
    const box = document.getElementById("change-list");
    if (!box) return;
    const which = document.getElementById("f-change").value;
    const pairs = INDEX.compare.pairs.filter(p => which === "all" || p.change === which || (which === "zoom" && p.zoom));
    const size = INDEX.page_size;
    const table = el("table", { class: "changes" }, el("tr", {}, ...["question", "reference", "run A", "run B", "change"].map(t => el("th", { text: t }))));
    for (const p of pairs.slice(page * size, (page + 1) * size)) {
      const side = id => {
        const e = EPISODES[id];
        return el("td", {}, el("span", { class: "tag " + (e.correct ? "ok" : "bad"), text: e.correct ? "✓" : "✗" }),
          el("span", { text: `${e.ans || "(none)"} · ${e.zooms} zooms ` }),
          el("button", { class: "link", text: "open", onclick: ev => {
            const row = ev.target.closest("tr"); const next = row.nextElementSibling;
            if (next && next.classList.contains("opened") && next.dataset.id === String(id)) { next.remove(); return; }
            if (next && next.classList.contains("opened")) next.remove();
            row.after(el("tr", { class: "opened", "data-id": id }, el("td", { colspan: 5 }, detail(e))));
          } }));
      };
      table.append(el("tr", { "data-change": p.change }, el("td", { text: p.q }), el("td", { text: p.ref }), side(p.a), side(p.b),
        el("td", { text: p.change + (p.zoom ? " · " + p.zoom : "") })));
    }
    box.replaceChildren(table);
    document.getElementById("change-pager").replaceChildren(pager(pairs.length, size, renderChanges, page));
  }

  buildFilters();
  renderList();
  if (INDEX.groups) renderGroups(0);
  if (INDEX.compare) {
    document.getElementById("f-change").addEventListener("change", () => renderChanges(0));
    renderChanges(0);
  }
  // #ep-N in the address opens episode N (links to one episode can be shared)
  function openFromHash() {
    const match = /^#ep-(\d+)$/.exec(location.hash);
    if (!match || !EPISODES[+match[1]]) return;
    for (const [name, node] of Object.entries(controls)) node.value = name === "search" ? "#" + match[1] : "all";
    state.page = 0;
    renderList();
    const box = document.querySelector(`#cards .card[data-id="${match[1]}"]`);
    if (box && !box.querySelector(":scope > .detail")) toggleDetail(box, EPISODES[+match[1]]);
    if (box) box.scrollIntoView();
  }
  window.addEventListener("hashchange", openFromHash);
  openFromHash();
  window.medvrReport = { readyMs: performance.now(), episodes: EPISODES.length,
    filtered: () => filtered().map(e => e.id), detail: id => detail(EPISODES[id]) };
  document.documentElement.dataset.ready = "1";
})();
