/* SiteWatch wall page. Data: /wall/api/stream (server-sent events, pushed on every change), /wall/api/site/{code}
   for the drill-down. Charts: ECharts, served by the API from the project's own npm install (no CDN). */
"use strict";

const I18N = {
  zh: {
    title: "建筑工地安全监测大屏", connecting: "连接中", live: "实时", offline: "已断开", logout: "退出",
    red: "红色隐患", orange: "橙色隐患", yellow: "黄色隐患", majors: "重大隐患", stopwork: "停工", overdue: "整改逾期",
    map: "城市总览 · 工地分布", majorlist: "重大事故隐患 · 停工整改", byfamily: "在办隐患 · 按类别", devices: "设备状态",
    feed: "工单动态", back: "← 返回总览", sitetickets: "工地隐患工单", current: "设备当前值", none: "无",
    devbad: "设备异常", ok: "正常", off: "离线", silent: "静默", faulty: "故障", inhibited: "屏蔽",
    listed: "挂牌督办", late: "逾期", lon: "经度", lat: "纬度", open: "在办", worst: "最高等级",
    nocoords: "无坐标的工地", from_tickets: "（来自故障工单）", from_devices: "（来自设备监测）",
    st_open: "待确认", st_acknowledged: "已确认", st_rectifying: "整改中", st_rectified: "待验收", st_closed: "已销号",
    level: "等级", site: "工地", device: "设备", kind: "类型", status: "状态", value: "数值", threshold: "阈值",
    since: "开始", no_tsdb: "时序数据库不可用，无法显示传感器曲线：", alarm: "报警线", nodata: "无数据",
    online: "在线", gateway: "网关", ago_s: "秒前", ago_m: "分钟前", ago_h: "小时前", ago_d: "天前",
    L1: "黄", L2: "橙", L3: "红", L0: "解除",
    a_opened: "新隐患", a_level_upgraded: "升级", a_level_changed: "等级变化", a_condition_cleared: "报警解除",
    a_condition_returned: "再次报警", a_acknowledged: "已确认", a_rectification_started: "开始整改",
    a_rectified: "已整改", a_closed: "销号", a_reopened: "回头看重开", a_escalated: "逾期上报",
    a_major_flagged: "列为重大隐患", a_stop_work_lifted: "解除停工", a_rectification_failed: "整改未生效",
    a_verification_rejected: "验收不通过", a_retracted: "撤回", a_credit_deducted: "扣减信用分",
    f_crane: "塔吊", f_formwork: "高支模", f_pit: "深基坑", f_electrical: "临时用电", f_battery: "电池充电",
    k_crane_overload: "起重量超载", k_crane_moment: "力矩超限", k_crane_wind: "风速超限",
    k_pit_cumulative: "基坑累计位移", k_pit_rate: "基坑位移速率", k_formwork_control: "高支模监测超限",
    k_electrical_leakage: "漏电流超限", k_electrical_overcurrent: "过电流", k_electrical_imbalance: "三相不平衡",
    k_electrical_terminal_temp: "端子温度超限", k_battery_temp: "电池温度超限", k_battery_temp_rise: "温升过快",
    k_battery_gas: "烟雾/一氧化碳", k_fault_silent: "传感器静默", k_fault_flatline: "数值僵直",
    k_fault_spike: "数据突变", k_fault_out_of_range: "超量程", k_fault_gateway_offline: "网关离线",
  },
  en: {
    title: "Construction Site Safety Wall", connecting: "connecting", live: "live", offline: "disconnected",
    logout: "Log out", red: "Red hazards", orange: "Orange hazards", yellow: "Yellow hazards", majors: "Major hazards",
    stopwork: "stop-work", overdue: "Rectification overdue", map: "City overview · sites", majorlist:
    "Major hazards · stop-work rectification", byfamily: "Open hazards by family", devices: "Device health",
    feed: "Ticket feed", back: "← Back to overview", sitetickets: "Site tickets", current: "Current values",
    none: "none", devbad: "Devices not OK", ok: "ok", off: "off", silent: "silent", faulty: "faulty",
    inhibited: "inhibited", listed: "listed supervision", late: "overdue", lon: "longitude", lat: "latitude",
    open: "open", worst: "worst level", nocoords: "Sites without coordinates", from_tickets: "(from fault tickets)",
    from_devices: "(from device monitoring)", st_open: "open", st_acknowledged: "acknowledged",
    st_rectifying: "rectifying", st_rectified: "rectified", st_closed: "closed", level: "level", site: "site",
    device: "device", kind: "kind", status: "status", value: "value", threshold: "threshold", since: "since",
    no_tsdb: "Time-series database unavailable, no sensor charts: ", alarm: "alarm", nodata: "no data",
    online: "online", gateway: "gateway", ago_s: "s ago", ago_m: " min ago", ago_h: " h ago", ago_d: " d ago",
    L1: "YELLOW", L2: "ORANGE", L3: "RED", L0: "CLEAR",
    a_opened: "opened", a_level_upgraded: "upgraded", a_level_changed: "level changed",
    a_condition_cleared: "cleared", a_condition_returned: "alarming again", a_acknowledged: "acknowledged",
    a_rectification_started: "rectifying", a_rectified: "rectified", a_closed: "closed", a_reopened: "reopened (re-check)",
    a_escalated: "escalated (overdue)", a_major_flagged: "flagged major", a_stop_work_lifted: "stop-work lifted",
    a_rectification_failed: "rectification failed", a_verification_rejected: "verification rejected",
    a_retracted: "retracted", a_credit_deducted: "credit points deducted",
    f_crane: "Crane", f_formwork: "Formwork", f_pit: "Pit", f_electrical: "Electrical", f_battery: "Battery",
  },
};
const LEVEL_COLOUR = {0: "#30d158", 1: "#ffd60a", 2: "#ff9500", 3: "#ff3b30"};
const UNIT = {masst: "t", percent: "%", lengthmm: "mm", celsius: "°C"};

let lang = localStorage.getItem("sw-wall-lang") || "zh";
let data = null;
let openSiteCode = null;
let siteTimer = null;
const charts = {};

function t(key) { return (I18N[lang] && I18N[lang][key]) || I18N.zh[key] || key; }
function kindName(kind) {
  const k = "k_" + kind.replace(/\./g, "_");
  return lang === "en" ? kind : (I18N.zh[k] || kind);
}
function actionName(a) { const k = "a_" + a; return t(k) === k ? a.replace(/_/g, " ") : t(k); }
function famName(f) { return t("f_" + f) === "f_" + f ? f : t("f_" + f); }
function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function badge(level) { return `<span class="badge L${level}">${esc(t("L" + level))}</span>`; }
function ago(ms) {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return Math.round(s) + t("ago_s");
  if (s < 3600) return Math.round(s / 60) + t("ago_m");
  if (s < 86400) return (s / 3600).toFixed(1) + t("ago_h");
  return (s / 86400).toFixed(1) + t("ago_d");
}
function hhmmss(ms) { return new Date(ms).toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB", {hour12: false}); }
function fmt(v) { return v === null || v === undefined ? "–" : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2)); }

function chart(id) {
  const el = document.getElementById(id);
  if (!el) return null;
  if (!charts[id] || charts[id].getDom() !== el) charts[id] = echarts.init(el, null, {renderer: "canvas"});
  return charts[id];
}

// ------------------------------------------------------------------------------------------- overview
function applyI18n() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.getElementById("lang").textContent = lang === "zh" ? "EN" : "中文";
  document.title = "SiteWatch · " + t("title");
}

function render(d) {
  data = d;
  document.getElementById("me").textContent = `${d.me.name} (${d.me.role})`;
  document.getElementById("k-red").textContent = d.by_level["3"];
  document.getElementById("k-orange").textContent = d.by_level["2"];
  document.getElementById("k-yellow").textContent = d.by_level["1"];
  document.getElementById("k-major").textContent = d.totals.majors;
  document.getElementById("k-stop").textContent = d.totals.stop_work;
  document.getElementById("k-overdue").textContent = d.totals.overdue;
  const h = d.device_health;
  document.getElementById("k-devbad").textContent = h.off + h.silent + h.faulty;
  document.getElementById("k-devdetail").textContent =
    `${t("off")} ${h.off} · ${t("silent")} ${h.silent} · ${t("faulty")} ${h.faulty} · ${t("ok")} ${h.ok}`;
  renderMap(d.sites);
  renderFamily(d.by_family);
  renderMajors(d.majors);
  renderDevices("devices", d.devices.filter((x) => x.state !== "ok").concat(d.devices.filter((x) => x.state === "ok")));
  document.getElementById("devsrc").textContent = t(d.devices_source === "devices" ? "from_devices" : "from_tickets");
  renderFeed(d.feed);
}

function renderMap(sites) {
  const placed = sites.filter((s) => s.lat !== null && s.lon !== null);
  const missing = sites.filter((s) => s.lat === null || s.lon === null);
  document.getElementById("nocoords").textContent = missing.length ?
    `${t("nocoords")}: ${missing.map((s) => s.name + " (" + s.site + ")").join(", ")}` : "";
  const lons = placed.map((s) => s.lon), lats = placed.map((s) => s.lat);
  const pad = 0.03;
  const point = (s) => ({
    name: s.name, value: [s.lon, s.lat, s.open], site: s.site, s,
    symbolSize: 18 + Math.min(30, 5 * s.open),
    itemStyle: {color: LEVEL_COLOUR[s.worst] || LEVEL_COLOUR[0], borderColor: "#fff", borderWidth: s.majors ? 3 : 1},
  });
  const c = chart("map");
  c.setOption({
    backgroundColor: "transparent", animation: false,
    grid: {left: 60, right: 20, top: 20, bottom: 40},
    tooltip: {trigger: "item", formatter: (p) => {
      const s = p.data.s;
      return `<b>${esc(s.name)}</b> (${esc(s.site)})<br>${esc(s.district)} ${esc(s.company)}<br>` +
        `${t("open")}: ${s.open} · ${t("majors")}: ${s.majors} · ${t("stopwork")}: ${s.stop_work}<br>` +
        `${t("devbad")}: ${s.devices_bad}`;
    }},
    xAxis: {type: "value", name: t("lon"), min: Math.min(...lons) - pad, max: Math.max(...lons) + pad, scale: true,
            axisLabel: {color: "#8fa1c0", formatter: (v) => v.toFixed(2) + "°E"},
            splitLine: {lineStyle: {color: "#24324d", type: "dashed"}}},
    yAxis: {type: "value", name: t("lat"), min: Math.min(...lats) - pad, max: Math.max(...lats) + pad, scale: true,
            axisLabel: {color: "#8fa1c0", formatter: (v) => v.toFixed(2) + "°N"},
            splitLine: {lineStyle: {color: "#24324d", type: "dashed"}}},
    series: [
      {type: "scatter", data: placed.filter((s) => !s.stop_work).map(point),
       label: {show: true, position: "right", color: "#e8eef9", fontSize: 16,
               formatter: (p) => `${p.data.s.name}${p.data.s.open ? "  " + p.data.s.open : ""}`}},
      {type: "effectScatter", rippleEffect: {scale: 3.5, brushType: "stroke"}, data: placed.filter((s) => s.stop_work).map(point),
       label: {show: true, position: "right", color: "#ff2d55", fontSize: 18, fontWeight: "bold",
               formatter: (p) => `${p.data.s.name}  ${t("stopwork")}`}},
    ],
  }, true);
}

function renderFamily(byFamily) {
  const fams = Object.keys(byFamily);
  chart("family").setOption({
    backgroundColor: "transparent", animation: false, grid: {left: 90, right: 30, top: 10, bottom: 25},
    xAxis: {type: "value", minInterval: 1, axisLabel: {color: "#8fa1c0"}, splitLine: {lineStyle: {color: "#24324d"}}},
    yAxis: {type: "category", data: fams.map(famName), axisLabel: {color: "#e8eef9", fontSize: 16}},
    series: [{type: "bar", data: fams.map((f) => byFamily[f]), itemStyle: {color: "#64d2ff"},
              label: {show: true, position: "right", color: "#e8eef9", fontSize: 16}}],
  }, true);
}

function renderMajors(majors) {
  const ul = document.getElementById("majors");
  ul.innerHTML = majors.length ? majors.map((m) => `<li data-ticket-id="${m.id}" data-site="${esc(m.site)}">
    ${badge(m.peak_level)} <b>${esc(m.site_name)}</b> ${esc(m.device)} ${esc(kindName(m.kind))}
    ${m.stop_work ? `<span class="badge stop">${esc(t("stopwork"))}</span>` : ""}
    ${m.listed_supervision ? `<span class="badge listed">${esc(t("listed"))}</span>` : ""}
    ${m.overdue ? `<span class="badge late">${esc(t("late"))}</span>` : ""}
    <span class="muted">${esc(t("st_" + m.status))} · #${m.id} · ${ago(m.opened_ms)}</span></li>`).join("")
    : `<li class="muted">${esc(t("none"))}</li>`;
}

function renderDevices(id, devices) {
  const ul = document.getElementById(id);
  ul.innerHTML = devices.slice(0, 80).map((d) => `<li data-device="${esc(d.site)}/${esc(d.device)}">
    <b class="st-${esc(d.state)}">● ${esc(t(d.state))}</b> ${esc(d.site)} ${esc(d.device)}
    <span class="muted">${esc(famName(d.family))}${d.reason ? " · " + esc(kindName(d.reason)) : ""}${d.since_ms ? " · " + ago(d.since_ms) : ""}</span></li>`).join("")
    || `<li class="muted">${esc(t("none"))}</li>`;
}

function renderFeed(feed) {
  document.getElementById("feed").innerHTML = feed.map((e) => `<li data-ticket-id="${e.id}" data-site="${esc(e.site)}">
    <span class="when">${hhmmss(e.at_ms)}</span> ${badge(e.to_level ?? e.peak_level)}
    <b>${esc(actionName(e.action))}</b> ${esc(e.site_name)} ${esc(e.device)} ${esc(kindName(e.kind))}
    ${e.major ? `<span class="badge stop">${esc(t("majors"))}</span>` : ""}
    <span class="muted">#${e.id} · ${esc(e.actor)}</span></li>`).join("") || `<li class="muted">${esc(t("none"))}</li>`;
}

// ------------------------------------------------------------------------------------------- drill-down
async function openSite(code) {
  openSiteCode = code;
  document.getElementById("site").hidden = false;
  await loadSite();
  clearInterval(siteTimer);
  siteTimer = setInterval(loadSite, 10000);
}

function closeSite() {
  openSiteCode = null;
  clearInterval(siteTimer);
  document.getElementById("site").hidden = true;
  for (const id of Object.keys(charts)) {
    if (id.startsWith("trend-")) { charts[id].dispose(); delete charts[id]; }
  }
}

async function loadSite() {
  if (!openSiteCode) return;
  const r = await fetch(`/wall/api/site/${encodeURIComponent(openSiteCode)}`, {credentials: "same-origin"});
  if (r.status === 401) { location.reload(); return; }
  if (!r.ok) { closeSite(); return; }
  renderSite(await r.json());
}

function renderSite(d) {
  const s = d.site;
  document.getElementById("site-title").textContent = `${s.name} (${s.site})`;
  document.getElementById("site-sub").textContent = `${s.district} ${s.company}`;
  const rows = d.tickets.filter((x) => x.status !== "closed").concat(d.tickets.filter((x) => x.status === "closed").slice(0, 10));
  document.getElementById("site-tickets").innerHTML =
    `<tr><th>#</th><th>${t("level")}</th><th>${t("device")}</th><th>${t("kind")}</th><th>${t("value")}</th>` +
    `<th>${t("threshold")}</th><th>${t("status")}</th><th>${t("since")}</th></tr>` +
    rows.map((x) => `<tr data-ticket-id="${x.id}"><td>${x.id}</td><td>${badge(x.peak_level)}</td><td>${esc(x.device)}</td>
      <td>${esc(kindName(x.kind))} ${x.stop_work ? `<span class="badge stop">${esc(t("stopwork"))}</span>` : ""}</td>
      <td>${fmt(x.peak_value)}</td><td>${fmt(x.threshold)}</td><td>${esc(t("st_" + x.status))}
      ${x.overdue ? `<span class="badge late">${esc(t("late"))}</span>` : ""}</td><td>${ago(x.opened_ms)}</td></tr>`).join("");
  renderDevices("site-devices", d.devices);
  const c = d.charts;
  document.getElementById("site-note").textContent = c.error ? t("no_tsdb") + c.error : `InfluxDB ${c.influx}`;
  document.getElementById("site-current").innerHTML = (c.current.length || c.gateways.length ? "" :
    `<div class="muted">${esc(t("nodata"))}</div>`) + c.current.map((x) => {
    const lvl = x.bands ? (x.value >= x.bands[2] ? 3 : x.value >= x.bands[1] ? 2 : x.value >= x.bands[0] ? 1 : 0) : 0;
    return `<div class="tile L${lvl}"><div class="n">${esc(x.device)} ${esc(x.metric)}</div><div class="x">${fmt(x.value)}</div></div>`;
  }).join("") + c.gateways.map((g) => `<div class="tile ${g.online ? "" : "L3"}"><div class="n">${t("gateway")} ${esc(g.gateway)}</div>
    <div class="x">${g.online ? t("online") : t("off")}</div></div>`).join("");
  const holder = document.getElementById("site-charts");
  for (const tr of c.trends) {
    const id = "trend-" + tr.key;
    if (!document.getElementById(id)) {
      holder.insertAdjacentHTML("beforeend",
        `<section class="panel"><h2 id="${id}-title"></h2><div id="${id}" class="chart"></div></section>`);
    }
    document.getElementById(id + "-title").textContent = lang === "zh" ? tr.title_zh : tr.title;
    const bands = tr.bands ? [[tr.bands[0], LEVEL_COLOUR[1]], [tr.bands[1], LEVEL_COLOUR[2]], [tr.bands[2], LEVEL_COLOUR[3]]] : [];
    const now = Date.now();
    const empty = !tr.series.some((sr) => sr.points.length);
    const series = tr.series.map((sr, i) => ({
      name: sr.alarm ? `${t("alarm")} ${sr.name.replace(/^alarm /, "")}` : sr.name, type: "line", showSymbol: false,
      data: sr.points, lineStyle: sr.alarm ? {type: "dashed", width: 2, color: LEVEL_COLOUR[3]} : {width: 2},
      markLine: i === 0 && bands.length ? {symbol: "none", silent: true, label: {color: "#e8eef9"},
        data: bands.map(([v, col]) => ({yAxis: v, lineStyle: {color: col, type: "solid", width: 1.5}}))} : undefined,
    }));
    if (!series.length && bands.length) {
      series.push({name: t("nodata"), type: "line", data: [], markLine: {symbol: "none", silent: true,
        data: bands.map(([v, col]) => ({yAxis: v, lineStyle: {color: col}}))}});
    }
    chart(id).setOption({
      backgroundColor: "transparent", animation: false, grid: {left: 55, right: 55, top: 30, bottom: 50},
      tooltip: {trigger: "axis"}, legend: {bottom: 0, textStyle: {color: "#e8eef9"}, type: "scroll"},
      xAxis: {type: "time", min: now - tr.span_ms, max: now, axisLabel: {color: "#8fa1c0"}},
      yAxis: {type: "value", scale: true, name: UNIT[tr.unit] || tr.unit, axisLabel: {color: "#8fa1c0"},
              min: empty ? 0 : null,
              max: bands.length ? (v) => Math.max(empty ? 0 : v.max, bands[2][0] * 1.05) : (empty ? 1 : null),
              splitLine: {lineStyle: {color: "#24324d"}}},
      series,
    }, true);
  }
}

// ------------------------------------------------------------------------------------------- wiring
function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/wall/api/stream");
  es.addEventListener("open", () => { live.classList.remove("off"); live.textContent = t("live"); live.dataset.i18n = "live"; });
  es.addEventListener("error", () => { live.classList.add("off"); live.textContent = t("offline"); live.dataset.i18n = "offline"; });
  es.addEventListener("overview", (ev) => {
    render(JSON.parse(ev.data));
    if (openSiteCode) loadSite();
  });
  es.addEventListener("auth", () => { es.close(); location.reload(); });
}

document.getElementById("lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("sw-wall-lang", lang);
  applyI18n();
  if (data) render(data);
  if (openSiteCode) loadSite();
});
document.getElementById("logout").addEventListener("click", async () => {
  await (await fetch("/wall/logout", {method: "POST", credentials: "same-origin"})).text();
  location.replace("/wall");
});
document.getElementById("back").addEventListener("click", closeSite);
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeSite(); });
chart("map").on("click", (p) => { if (p.data && p.data.site) openSite(p.data.site); });
for (const id of ["majors", "feed"]) {
  document.getElementById(id).addEventListener("click", (e) => {
    const li = e.target.closest("li[data-site]");
    if (li) openSite(li.dataset.site);
  });
}
window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
setInterval(() => { document.getElementById("clock").textContent = new Date().toLocaleString(lang === "zh" ? "zh-CN" : "en-GB", {hour12: false}); }, 1000);
const params = new URLSearchParams(location.search);
if (params.get("lang") === "en" || params.get("lang") === "zh") lang = params.get("lang");
applyI18n();
connect();
if (params.get("site")) openSite(params.get("site"));
