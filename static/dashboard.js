// consent-gateway analytics dashboard: plain JS, no dependencies, every value inserted as text.
(function () {
  "use strict";

  var TEXT = {
    ko: {
      skip: "본문으로 건너뛰기", title: "마케팅 분석", controls: "조회 조건", token: "API 토큰",
      tokenHelp: "consent-gateway keys create NAME 으로 만든 토큰. 이 탭에만 보관됩니다.", site: "사이트",
      period: "기간", last7: "최근 7일", last30: "최근 30일", last90: "최근 90일", last365: "최근 12개월",
      custom: "직접 지정", from: "시작일", to: "종료일", interval: "단위", day: "일", week: "주", month: "월",
      hour: "시간", show: "조회", headline: "주요 지표", series: "추이", csv: "CSV 내보내기", asTable: "표로 보기",
      breakdown: "세부 분석", dimension: "기준", dim_page: "페이지", dim_entry_page: "시작 페이지",
      dim_referrer_host: "유입 사이트", dim_utm_source: "유입 소스 (utm_source)", dim_utm_medium: "매체 (utm_medium)",
      dim_utm_campaign: "캠페인 (마케팅 동의자)", dim_click_attribution: "광고 클릭 (마케팅 동의자)",
      dim_device: "기기", dim_browser: "브라우저", dim_os: "운영체제", dim_event_name: "이벤트",
      funnel: "퍼널", steps: "단계 (쉼표로 구분)", window: "시간 창 (초)", consent: "동의율", byDay: "일별 보기",
      visitors: "방문자", visits: "방문", pageviews: "페이지뷰", events: "이벤트", views_per_visit: "방문당 페이지뷰",
      bounce_rate: "이탈률", value: "항목", conversion: "전환율", date: "날짜", step: "단계", choices: "선택 수",
      estimate: "추정", loading: "불러오는 중…", loaded: "불러왔습니다.", needToken: "API 토큰을 입력하세요.",
      suppressedRow: "기타 (소수 집단 비공개)", suppressed: "비공개", nothing: "데이터가 없습니다.",
      kNote: "{k}명 미만인 집단은 개인 식별을 막기 위해 표시하지 않습니다. 작은 집단이 둘 이상이고 합쳐서 {k}명 이상일 때만 '기타'로 합쳐 보입니다.",
      docTitle: "마케팅 분석 · consent-gateway",
      populationNote: "조건에 맞는 사람이 {k}명 미만이라 세부 수치 없이 비공개로만 답합니다. 기간을 넓히거나 필터를 빼세요.",
      rangeNote: "원본 이벤트는 {cutoff}부터만 보관되므로 그 날부터의 값입니다.",
      marketingNote: "캠페인과 광고 클릭은 마케팅에 동의한 방문자에게서만 집계합니다.",
      direct: "(직접 유입)", none: "(없음)", adClick: "광고 클릭", pageStep: "페이지", eventStep: "이벤트",
      funnelNeedsData: "퍼널을 만들 페이지나 이벤트가 아직 충분하지 않습니다.", suppressedTotal: "비공개",
      http401: "유효한 API 토큰이 필요합니다. consent-gateway keys create NAME 으로 만드세요.",
      http403: "이 토큰으로는 이 사이트를 볼 수 없습니다. 이 사이트용 토큰을 쓰세요.",
      http400: "조회 조건이 올바르지 않습니다: {field}", http503: "분석 저장소에 연결할 수 없습니다. 잠시 후 다시 시도하세요.",
      estimateNote: "추정: 가명처리된 방문자는 날마다 새 키를 받으므로 여러 날 방문하면 날마다 한 번씩 셉니다.",
      chartLabel: "{from}부터 {to}까지 {interval} 단위 페이지뷰와 방문자 추이", necessary: "필수",
      preferences: "환경설정", analytics: "통계", marketing: "마케팅", category: "항목", share: "동의 비율",
      error: "오류", other: "English",
      today: "오늘", compare: "이전 기간과 비교", filters: "필터", removeFilter: "필터 제거: {name}",
      filterBy: "{value}(으)로 필터", sources: "유입 경로", campaigns: "캠페인", pages: "페이지", devices: "기기",
      goals: "목표 전환", goalsField: "목표 (쉼표로 구분, 비우면 모든 이벤트)", addFromData: "데이터에서 추가",
      pick: "고르세요…", dim_exit_page: "종료 페이지", dim_utm_content: "광고 소재 (utm_content)",
      dim_utm_term: "검색어 (utm_term)", visit_duration: "평균 방문 시간", conversions: "전환 방문자",
      conversion_rate: "전환율", goal: "목표", exits: "종료 방문", entries: "시작 방문",
      vsPrevious: "이전 기간 대비", noChange: "변화 없음", noCompare: "비교할 이전 기간 데이터가 없습니다.",
      completions: "달성 횟수", shareEnded: "이 공유 링크는 만료되었거나 취소되었습니다. 링크를 준 사람에게 새 링크를 요청하세요.",
      conversionsHidden: "목표를 달성한 사람이 {k}명 미만이라 전환 수는 표시하지 않습니다.", points: "%p", previousLine: "이전 기간 페이지뷰 ({from} – {to})", seconds: "{s}초", minutes: "{m}분 {s}초", realtime: "최근 30분 방문자: {n}",
      sharedNote: "공유된 읽기 전용 보기입니다. 토큰 없이 이 사이트의 수치만 볼 수 있습니다.",
      hiddenGroups: "{k}명 미만인 항목 {n}개는 표시하지 않았습니다.",
      goalsNote: "목표를 달성한 방문자 수와 전체 방문자 대비 비율입니다.", http404: "요청한 보고서가 없습니다.",
      compareNote: "비교 기간이 원본 이벤트 보관 기간보다 앞서 비교하지 않았습니다.", direct_src: "(직접 유입)",
      mobile: "모바일", desktop: "데스크톱", tablet: "태블릿",
      tab_referrer_host: "유입 사이트", tab_utm_source: "소스", tab_utm_medium: "매체", tab_utm_campaign: "캠페인",
      tab_utm_content: "소재", tab_utm_term: "검색어", tab_click_attribution: "광고 클릭", tab_page: "페이지",
      tab_entry_page: "시작 페이지", tab_exit_page: "종료 페이지", tab_device: "기기", tab_browser: "브라우저",
      tab_os: "운영체제",
      cookies: "쿠키", cookiesIntro: "이 사이트가 설정하거나 브라우저가 보내온 쿠키의 이름입니다(값은 저장하지 않습니다). 방문자가 아니라 사이트에 관한 사실이라 소수 집단 비공개를 적용하지 않습니다.",
      cookiesOnly: "미분류만 보기", cookiesCount: "{from}부터 오늘까지 본 쿠키 {total}개 가운데 미분류 {n}개",
      cookiesAllClassified: "{from}부터 오늘까지 본 쿠키 {total}개, 모두 분류되어 있습니다.",
      cookiesUnclassifiedOnly: "{from}부터 오늘까지 본 미분류 쿠키 {n}개",
      cookiesOverflow: "한도를 넘어 기록하지 못한 이름이 {n}번 나타났습니다.",
      beforeConsentNote: "동의 전: 방문자가 그 쿠키의 분류에 동의하지 않았는데 서버가 쿠키를 설정했거나 브라우저가 쿠키를 보내온 횟수입니다. 스크립트가 동의 전에 쿠키를 심으면 여기에 나타납니다. 차단: 게이트웨이가 응답에서 지운 쿠키 설정 수입니다.",
      cookiesHint: "미분류 쿠키를 설정 파일의 [cookies] 아래에 붙여 넣을 줄로 출력하려면 서버에서 다음 명령을 실행하세요:",
      cookiesTable: "쿠키 목록 (좁은 화면에서는 가로로 스크롤)", col_name: "이름", col_category: "분류",
      col_set_by: "설정 주체", col_set_count: "설정", col_request_count: "요청", col_blocked: "차단",
      col_before_consent: "동의 전", col_lifetime: "수명", col_flags: "속성", col_seen: "처음 / 마지막",
      col_paths: "주요 경로", src_registry: "레지스트리", src_catalogue: "카탈로그", src_unclassified: "미분류",
      src_gateway: "게이트웨이", set_by_server: "서버", set_by_script: "스크립트 (요청에서만)", session: "세션",
      lifeDays: "{n}일", lifeSeconds: "{n}초", cookiesError: "쿠키 목록을 불러오지 못했습니다: {error}"
    },
    en: {
      skip: "Skip to content", title: "Marketing analytics", controls: "Query", token: "API token",
      tokenHelp: "A token from consent-gateway keys create NAME. Kept in this tab only.", site: "Site",
      period: "Period", last7: "Last 7 days", last30: "Last 30 days", last90: "Last 90 days",
      last365: "Last 12 months", custom: "Custom", from: "From", to: "To", interval: "Interval", day: "Day",
      week: "Week", month: "Month", hour: "Hour", show: "Show", headline: "Headline numbers", series: "Trend",
      csv: "Export CSV", asTable: "Show as table", breakdown: "Breakdown", dimension: "Dimension",
      dim_page: "Page", dim_entry_page: "Entry page", dim_referrer_host: "Referrer", dim_utm_source: "utm_source",
      dim_utm_medium: "utm_medium", dim_utm_campaign: "Campaign (marketing consent)",
      dim_click_attribution: "Ad clicks (marketing consent)", dim_device: "Device", dim_browser: "Browser",
      dim_os: "OS", dim_event_name: "Event", funnel: "Funnel", steps: "Steps (comma-separated)",
      window: "Window (seconds)", consent: "Consent rates", byDay: "By day", visitors: "Visitors", visits: "Visits",
      pageviews: "Page views", events: "Events", views_per_visit: "Views per visit", bounce_rate: "Bounce rate",
      value: "Value", conversion: "Conversion", date: "Date", step: "Step", choices: "Choices",
      estimate: "estimate", loading: "Loading…", loaded: "Loaded.", needToken: "Enter an API token.",
      suppressedRow: "Other (small groups hidden)", suppressed: "hidden", nothing: "No data.",
      kNote: "Groups of fewer than {k} people are hidden so nobody can be singled out; they show as 'other' only when two or more of them together hold {k} people.",
      docTitle: "Marketing analytics · consent-gateway",
      populationNote: "Fewer than {k} people match, so the answer is the suppression alone. Widen the range or remove a filter.",
      rangeNote: "Raw events are kept from {cutoff} only, so the figures start on that day.",
      marketingNote: "Campaigns and ad clicks are counted only from visitors who granted marketing.",
      direct: "(direct)", none: "(none)", adClick: "ad click", pageStep: "Page", eventStep: "Event",
      funnelNeedsData: "There are not yet enough pages or events to build a funnel.", suppressedTotal: "hidden",
      estimateNote: "Estimate: pseudonymised visitors get a new key every day, so a visit on several days counts once per day.",
      chartLabel: "Page views and visitors per {interval} from {from} to {to}", necessary: "Necessary",
      preferences: "Preferences", analytics: "Analytics", marketing: "Marketing", category: "Category",
      share: "Share granting", error: "Error", other: "한국어",
      today: "Today", compare: "Compare with the previous period", filters: "Filters",
      removeFilter: "Remove filter: {name}", filterBy: "Filter by {value}", sources: "Sources",
      campaigns: "Campaigns", pages: "Pages", devices: "Devices", goals: "Goal conversions",
      goalsField: "Goals (comma-separated; empty: every event)", addFromData: "Add from the data",
      pick: "Choose…", dim_exit_page: "Exit page", dim_utm_content: "utm_content", dim_utm_term: "utm_term",
      visit_duration: "Visit duration", conversions: "Converted visitors", conversion_rate: "Conversion rate",
      goal: "Goal", exits: "Exits", entries: "Entries", vsPrevious: "vs previous period", noChange: "no change",
      completions: "Completions", shareEnded: "This shared link has expired or was revoked: ask whoever sent it for a new one.",
      conversionsHidden: "Fewer than {k} people reached a goal, so conversions are not shown.", noCompare: "No earlier data to compare with.", previousLine: "Page views, previous period ({from} – {to})", points: " pts", seconds: "{s}s", minutes: "{m}m {s}s",
      realtime: "Visitors in the last 30 minutes: {n}",
      sharedNote: "A shared, read-only view: it shows this site's figures and nothing else.",
      hiddenGroups: "{n} values with fewer than {k} people are not shown.",
      hiddenGroup: "1 value with fewer than {k} people is not shown.",
      goalsNote: "Visitors who reached each goal, and their share of all visitors.",
      http404: "No such report.", compareNote: "The previous period is older than the raw events kept: no comparison.",
      direct_src: "(direct)", mobile: "Mobile", desktop: "Desktop", tablet: "Tablet",
      tab_referrer_host: "Referrers", tab_utm_source: "Sources", tab_utm_medium: "Media",
      tab_utm_campaign: "Campaigns", tab_utm_content: "Content", tab_utm_term: "Terms",
      tab_click_attribution: "Ad clicks", tab_page: "Pages", tab_entry_page: "Entry pages",
      tab_exit_page: "Exit pages", tab_device: "Devices", tab_browser: "Browsers", tab_os: "OS",
      cookies: "Cookies", cookiesIntro: "The cookie names this site sets or browsers send back (never their values). They describe the site, not visitors, so no small-group hiding applies.",
      cookiesOnly: "Unclassified only", cookiesCount: "{n} of the {total} cookies seen from {from} to today are unclassified",
      cookiesAllClassified: "{total} cookies seen from {from} to today, all of them classified.",
      cookiesUnclassifiedOnly: "{n} unclassified cookies seen from {from} to today",
      cookiesOverflow: "{n} sightings of further names were not kept: the inventory's bounds were reached.",
      beforeConsentNote: "Before consent: how often the server set the cookie, or a browser sent it back, for a visitor who had not granted its category. A script that sets cookies before consent shows up here. Blocked: the Set-Cookie headers the gateway removed.",
      cookiesHint: "To print the unclassified cookies as lines to paste under [cookies] in the settings, run on the server:",
      cookiesTable: "Cookie inventory (scrolls sideways on a narrow screen)", col_name: "Name", col_category: "Category",
      col_set_by: "Set by", col_set_count: "Set", col_request_count: "Requests", col_blocked: "Blocked",
      col_before_consent: "Before consent", col_lifetime: "Lifetime", col_flags: "Attributes",
      col_seen: "First / last seen", col_paths: "Top paths", src_registry: "registry", src_catalogue: "catalogue",
      src_unclassified: "unclassified", src_gateway: "gateway", set_by_server: "server",
      set_by_script: "script (requests only)", session: "session", lifeDays: "{n} days", lifeSeconds: "{n} s",
      cookiesError: "The cookie inventory could not be loaded: {error}"
    }
  };
  var lang = "ko";
  var config = { site: "", k: 5, categories: [], today: new Date().toISOString().slice(0, 10) };
  var $ = function (id) { return document.getElementById(id); };
  // Filters in force, {dimension: value}; "(none)" names an empty value. Kept in the address bar.
  var filters = {};
  var shareToken = "";
  var OTHER = "other (suppressed)";
  var EMPTY = "(none)";
  var FILTERABLE = ["page", "referrer_host", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "click_attribution", "browser", "os", "device", "event_name"];
  var HEADLINE = [["visitors"], ["visits"], ["pageviews"], ["views_per_visit"], ["bounce_rate", "rate"],
    ["visit_duration", "duration"], ["conversions"], ["conversion_rate", "rate"]];
  var RATES = ["bounce_rate", "conversion_rate"];

  function t(key, vars) {
    var s = (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
    Object.keys(vars || {}).forEach(function (k) { s = s.split("{" + k + "}").join(vars[k]); });
    return s;
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k]; else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k]; else node.setAttribute(k, attrs[k]);
    });
    return node;
  }

  function fmt(value, kind) {
    if (value === null || value === undefined) return "—";
    if (kind === "rate") return new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 1 }).format(value);
    if (kind === "duration") {
      var m = Math.floor(value / 60), s = Math.round(value % 60);
      return m ? t("minutes", { m: m, s: s }) : t("seconds", { s: s });
    }
    if (typeof value === "number") return new Intl.NumberFormat(lang, { maximumFractionDigits: 2 }).format(value);
    return String(value);
  }

  function applyLang(next) {
    lang = next;
    document.documentElement.lang = lang;
    document.querySelectorAll("[data-i18n]").forEach(function (node) { node.textContent = t(node.getAttribute("data-i18n")); });
    var button = $("lang");
    button.textContent = t("other");
    button.setAttribute("lang", lang === "ko" ? "en" : "ko");
    $("k-note").textContent = t("kNote", { k: config.k });
    document.title = t("docTitle");
    document.querySelectorAll(".step-options").forEach(function (s) { if (s.options[0]) s.options[0].textContent = t("pick"); });
    renderFilters();
    try { localStorage.setItem("cg-analytics-lang", lang); } catch (e) { /* storage may be off */ }
  }

  function params(extra, withFilters) {
    var p = new URLSearchParams();
    if ($("site").value) p.set("site", $("site").value);
    p.set("from", $("from").value);
    p.set("to", $("to").value);
    if (withFilters !== false) Object.keys(filters).forEach(function (d) { p.set(d, filters[d]); });
    Object.keys(extra || {}).forEach(function (k) { p.set(k, extra[k]); });
    return p;
  }

  function token() { return shareToken || $("token").value.trim(); }

  function call(endpoint, p) {
    return fetch("api/v1/" + endpoint + "?" + p.toString(), { headers: { Authorization: "Bearer " + token() } })
      .then(function (r) {
        if (r.status === 200) return r;
        return r.json().catch(function () { return {}; }).then(function (body) {
          // The API explains in English; the Korean page says the same in Korean.
          if (shareToken && r.status === 401) throw new Error(t("shareEnded"));
          var english = (body && body.error) || ("HTTP " + r.status);
          var local = lang === "ko" && TEXT.ko["http" + r.status] ? t("http" + r.status, { field: (body && body.field) || "" }) : english;
          throw new Error(local);
        });
      });
  }

  function getJSON(endpoint, extra, withFilters) {
    return call(endpoint, params(extra, withFilters)).then(function (r) { return r.json(); });
  }

  // Right now: the last 30 minutes of the site, whatever the range and filters.
  function getRealtime() {
    var p = new URLSearchParams();
    if ($("site").value) p.set("site", $("site").value);
    return call("realtime", p).then(function (r) { return r.json(); }).then(renderRealtime);
  }

  function endpointParams(endpoint, dimension) {
    if (endpoint === "timeseries") {
      return $("compare").checked ? { interval: $("interval").value, compare: "previous" } : { interval: $("interval").value };
    }
    if (endpoint === "breakdown") return { dimension: dimension, limit: "100" };
    if (endpoint === "funnel") return { steps: $("steps").value, window: $("window").value };
    if (endpoint === "goals") return $("goals").value.trim() ? { goals: $("goals").value.trim() } : {};
    if (endpoint === "aggregate") {
      var p = $("goals").value.trim() ? { goals: $("goals").value.trim() } : {};
      if ($("compare").checked) p.compare = "previous";
      return p;
    }
    return {};
  }

  function status(message, isError) {
    $("status").textContent = message;
    $("status").className = "status" + (isError ? " error" : "");
  }

  // Notes are written here in the page's language; the API's English notes are only read for their presence.
  function notesFor(body, brief) {
    var notes = [];
    var given = body.notes || {};
    if (given.suppressed) notes.push(t("populationNote", { k: body.k }));
    if (given.range) notes.push(t("rangeNote", { cutoff: body.query.from }));
    if (!brief && (body.estimates || []).indexOf("visitors") >= 0 && !given.suppressed) notes.push(t("estimateNote"));
    if (given.marketing) notes.push(t("marketingNote"));
    if (given.compare) notes.push(t("compareNote"));
    if (body.suppressed_groups) {
      notes.push(t(body.suppressed_groups === 1 && lang === "en" ? "hiddenGroup" : "hiddenGroups", { n: body.suppressed_groups, k: body.k }));
    }
    return notes.join(" ");
  }

  // Empty values get a name ("(direct)" for no referrer); the API's fixed labels are translated.
  function valueLabel(value, dimension) {
    if (value === "" || (value === EMPTY && dimension !== "click_attribution")) {
      return dimension === "referrer_host" ? t("direct") : t("none");
    }
    if (dimension === "click_attribution") {
      if (value === "(none)") return t("none");
      if (value === "ad click") return t("adClick");
    }
    if (dimension === "device" && TEXT.en[value]) return t(value);
    return value;
  }

  // -- filters and the address bar -------------------------------------------------------------

  function filterDimension(dimension) {
    return dimension === "entry_page" || dimension === "exit_page" ? "page" : dimension;
  }

  function addFilter(dimension, value) {
    filters[filterDimension(dimension)] = value === "" ? EMPTY : value;
    renderFilters();
    loadAll();
  }

  function removeFilter(dimension) {
    delete filters[dimension];
    renderFilters();
    loadAll();
    var next = document.querySelector("#filters button") || $("h-headline");
    if (next && next.focus) { next.setAttribute("tabindex", next.tagName === "H2" ? "-1" : "0"); next.focus(); }
  }

  function renderFilters() {
    var list = $("filters");
    if (!list) return;
    list.textContent = "";
    var names = Object.keys(filters);
    $("filter-bar").hidden = !names.length;
    names.forEach(function (d) {
      var name = t("dim_" + d) + ": " + valueLabel(filters[d], d);
      var button = el("button", { type: "button", class: "chip", "data-filter": d, "aria-label": t("removeFilter", { name: name }) }, [
        el("span", { text: name }), el("span", { class: "x", "aria-hidden": "true", text: "×" })
      ]);
      button.addEventListener("click", function () { removeFilter(d); });
      list.appendChild(el("li", {}, [button]));
    });
  }

  function saveUrl() {
    var p = new URLSearchParams();
    p.set("lang", lang);
    if ($("site").value && $("site").value !== config.site) p.set("site", $("site").value);
    if ($("preset").value === "custom") { p.set("from", $("from").value); p.set("to", $("to").value); }
    else p.set("period", $("preset").value);
    if ($("interval").value !== "day") p.set("interval", $("interval").value);
    if (!$("compare").checked) p.set("compare", "off");
    Object.keys(filters).forEach(function (d) { p.set(d, filters[d]); });
    if ($("goals").value.trim()) p.set("goals", $("goals").value.trim());
    if ($("steps").value.trim()) p.set("steps", $("steps").value.trim());
    // The fragment (a shared link's token) is kept as it is: it never reaches the server.
    history.replaceState(null, "", location.pathname + "?" + p.toString() + location.hash);
  }

  function readUrl(query) {
    if (query.get("site")) $("site").value = query.get("site");
    if (query.get("from") && query.get("to")) {
      $("preset").value = "custom";
      $("from").value = query.get("from");
      $("to").value = query.get("to");
    } else {
      if (query.get("period") && document.querySelector("#preset option[value='" + CSS.escape(query.get("period")) + "']")) {
        $("preset").value = query.get("period");
      }
      setPreset();
    }
    if (["day", "week", "month", "hour"].indexOf(query.get("interval")) >= 0) $("interval").value = query.get("interval");
    if (query.get("compare") === "off") $("compare").checked = false;
    FILTERABLE.forEach(function (d) { if (query.get(d)) filters[d] = query.get(d); });
    if (query.get("goals")) $("goals").value = query.get("goals");
    if (query.get("steps")) $("steps").value = query.get("steps");
  }

  // -- headline ---------------------------------------------------------------------------------

  function changeText(metric, change) {
    if (change === null || change === undefined) return "";
    if (change === 0) return "± 0 · " + t("noChange");
    var arrow = change > 0 ? "▲ " : "▼ ";
    var size = Math.abs(change);
    var text = RATES.indexOf(metric) >= 0
      ? new Intl.NumberFormat(lang, { maximumFractionDigits: 1 }).format(100 * size) + t("points")
      : new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 1 }).format(size);
    return arrow + text;
  }

  function renderHeadline(body) {
    var row = body.results[0] || {};
    var comparison = body.comparison;
    var box = $("headline");
    box.textContent = "";
    HEADLINE.forEach(function (m) {
      var dd = el("dd", { "data-metric": m[0], text: fmt(row[m[0]], m[1]) });
      if ((body.estimates || []).indexOf(m[0]) >= 0) dd.appendChild(el("span", { class: "est", text: "(" + t("estimate") + ")" }));
      var card = el("div", {}, [el("dt", { text: t(m[0]) }), dd]);
      if (comparison && comparison.available) {
        var change = comparison.change[m[0]];
        var before = (comparison.results[0] || {})[m[0]];
        var text = changeText(m[0], change);
        if (text) {
          var up = change > 0, good = m[0] === "bounce_rate" ? !up : up;
          card.appendChild(el("dd", {
            class: "delta " + (change === 0 ? "flat" : good ? "good" : "bad"), "data-change": m[0],
            title: t("vsPrevious") + ": " + fmt(before, m[1]),
            text: text
          }, [el("span", { class: "visually-hidden", text: " " + t("vsPrevious") + " (" + fmt(before, m[1]) + ")" })]));
        }
      }
      box.appendChild(card);
    });
    var notes = notesFor(body);
    if (!body.suppressed && row.conversions === null) notes = t("conversionsHidden", { k: body.k }) + " " + notes;
    if (comparison && comparison.available) {
      notes = t("vsPrevious") + ": " + comparison.from + " – " + comparison.to + ". " + notes;
    }
    $("headline-notes").textContent = notes;
  }

  function renderRealtime(body) {
    var row = body.results[0] || {};
    var box = $("realtime");
    box.hidden = false;
    box.textContent = "";
    box.appendChild(el("span", { class: "dot", "aria-hidden": "true" }));
    box.appendChild(el("span", { "data-realtime": row.suppressed ? "suppressed" : String(row.visitors),
      text: t("realtime", { n: row.suppressed ? t("suppressed") : fmt(row.visitors) }) }));
  }

  // A step of 1, 2 or 5 times a power of ten, so that about `count` steps cover `max`.
  function niceStep(max, count) {
    var rough = Math.max(max, 1) / count;
    var power = Math.pow(10, Math.floor(Math.log(rough) / Math.LN10));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= rough) return Math.max(1, steps[i] * power);
    return Math.max(1, 10 * power);
  }

  var lastSeries = null;

  // Drawn at the box's own width, so 12 px text stays 12 px on a phone; x labels are thinned to fit.
  function renderChart(body) {
    lastSeries = body;
    var rows = body.results;
    var box = $("chart");
    box.textContent = "";
    var W = Math.max(280, Math.round(box.clientWidth || 760));
    var narrow = W < 520;
    var H = narrow ? 220 : 260, L = 44, R = 24, T = 12, B = 34;
    var series = [["pageviews", "s0"], ["visitors", "s1"]];
    // The previous period's page views, bucket for bucket, as a faint line behind.
    var before = body.comparison && body.comparison.available ? body.comparison.results.slice(0, rows.length) : [];
    var top = 0;
    rows.forEach(function (r) { series.forEach(function (s) { if (r[s[0]] > top) top = r[s[0]]; }); });
    before.forEach(function (r) { if (r.pageviews > top) top = r.pageviews; });
    var tick = niceStep(top, narrow ? 3 : 4);
    var max = Math.max(tick, Math.ceil(top / tick) * tick);
    var title = t("chartLabel", { from: body.query.from, to: body.query.to, interval: t(body.query.interval) });
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-labelledby": "chart-title" });
    root.appendChild(svg("title", { id: "chart-title", text: title }));
    var x = function (i) { return L + (rows.length <= 1 ? 0 : i * (W - L - R) / (rows.length - 1)); };
    var y = function (v) { return T + (H - T - B) * (1 - v / max); };
    for (var v = 0; v <= max; v += tick) {
      root.appendChild(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      root.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "data-tick": String(v), text: fmt(v) }));
    }
    root.appendChild(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    var hourly = body.query.interval === "hour";
    var slot = hourly ? 50 : 46;
    var fits = Math.max(2, Math.floor((W - L - R) / slot));
    var step = Math.max(1, Math.ceil(rows.length / fits));
    if (hourly) {
      // Whole hours that divide a day, then whole days.
      var hours = [1, 2, 3, 4, 6, 12, 24, 48, 72, 168, 336];
      for (var h = 0; h < hours.length; h++) { if (hours[h] >= step) { step = hours[h]; break; } }
    }
    rows.forEach(function (r, i) {
      if (r.suppressed) root.appendChild(svg("rect", { class: "gap", x: x(i) - 3, y: T, width: 6, height: H - T - B }));
      if (i % step !== 0) return;
      var label = r.date.slice(5, 10);
      if (hourly && step < 24) label = r.date.slice(11, 13) === "00" || i === 0 ? r.date.slice(5, 10) : r.date.slice(11, 16);
      // Centred under its point; the margins leave room for half a label at either end.
      root.appendChild(svg("text", { x: x(i), y: H - B + 18, "text-anchor": "middle", class: "xlabel", text: label }));
    });
    var lines = before.length ? [["pageviews", "s2", before]] : [];
    series.forEach(function (s) { lines.push([s[0], s[1], rows]); });
    lines.forEach(function (s) {
      var d = "", pen = false;
      s[2].forEach(function (r, i) {
        var value = r[s[0]];
        if (value === null || value === undefined) { pen = false; return; }
        d += (pen ? " L" : " M") + x(i).toFixed(1) + " " + y(value).toFixed(1);
        pen = true;
      });
      if (d) root.appendChild(svg("path", { class: s[1], d: d.trim(), "data-series": s[1] === "s2" ? "previous" : s[0] }));
    });
    if (!rows.length) root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", text: body.suppressed ? t("suppressed") : t("nothing") }));
    box.appendChild(root);
    var legend = $("chart-legend");
    legend.textContent = "";
    legend.appendChild(el("span", { class: "l0", text: t("pageviews") }));
    legend.appendChild(el("span", { class: "l1", text: t("visitors") }));
    if (before.length) {
      legend.appendChild(el("span", { class: "l2", text: t("previousLine", { from: body.comparison.from, to: body.comparison.to }) }));
    }
    var notes = notesFor(body);
    if (notes) legend.appendChild(el("small", { class: "notes", text: notes }));
    renderTable($("series-table"), ["date", "visitors", "pageviews", "events"], rows);
  }

  // A table; with `dimension`, the first column's values are buttons that filter everything by them.
  function renderTable(box, columns, rows, barColumn, dimension, headers) {
    box.textContent = "";
    if (!rows.length) { box.appendChild(el("p", { class: "empty", text: t("nothing") })); return; }
    var max = 0;
    if (barColumn) rows.forEach(function (r) { if (r.value !== OTHER && r[barColumn] > max) max = r[barColumn]; });
    var head = el("tr", {}, columns.map(function (c) {
      return el("th", { scope: "col", class: c === columns[0] ? "" : "num", text: t((headers || {})[c] || c) });
    }));
    var body = el("tbody");
    var clickable = dimension && (FILTERABLE.indexOf(filterDimension(dimension)) >= 0);
    rows.forEach(function (r) {
      var suppressedRow = r.value === OTHER;
      var tr = el("tr", { class: suppressedRow || r.suppressed ? "suppressed" : "" });
      columns.forEach(function (c, i) {
        var kind = c === "bounce_rate" || c === "conversion" || c === "conversion_rate" || config.categories.indexOf(c) >= 0 ? "rate" : "";
        var text = suppressedRow && c === "value" ? t("suppressedRow")
          : (c === "value" ? fmt(valueLabel(r[c], dimension))
            : (r.suppressed && r[c] === null ? t("suppressed") : fmt(r[c], kind)));
        if (i === 0 && barColumn) {
          var bar = el("span", { class: "bar", "aria-hidden": "true" });
          bar.style.width = (max && !suppressedRow ? Math.round(100 * (r[barColumn] || 0) / max) : 0) + "%";
          var label;
          var by = r.filterDim ? [r.filterDim, r.filterValue] : (clickable ? [dimension, r.value] : null);
          if (by && !suppressedRow) {
            label = el("button", { type: "button", class: "text filter-link", "data-value": by[1],
              title: t("filterBy", { value: text }), text: text });
            label.addEventListener("click", function () { addFilter(by[0], by[1]); });
          } else {
            label = el("span", { class: "text", text: text });
          }
          if (suppressedRow) label.setAttribute("title", t("kNote", { k: config.k }));
          tr.appendChild(el("td", { class: "label" }, [bar, label]));
        } else {
          tr.appendChild(el(i === 0 ? "th" : "td", i === 0 ? { scope: "row", text: text } : { class: "num", text: text }));
        }
      });
      body.appendChild(tr);
    });
    box.appendChild(el("div", { class: "table-scroll" }, [el("table", {}, [el("thead", {}, [head]), body])]));
  }

  // -- panels: several breakdowns at once, each with its own tabs ----------------------------------

  var panelDims = {};

  function buildPanels() {
    document.querySelectorAll(".panel").forEach(function (panel) {
      var dims = panel.getAttribute("data-dims").split(",");
      panelDims[panel.id] = dims[0];
      var tabs = el("div", { class: "tabs", role: "tablist", "aria-labelledby": panel.querySelector("h2").id });
      dims.forEach(function (d, i) {
        var tab = el("button", { type: "button", role: "tab", id: panel.id + "-tab-" + d, "data-dim": d,
          "aria-selected": i === 0 ? "true" : "false", tabindex: i === 0 ? "0" : "-1",
          "aria-controls": panel.id + "-body", "data-i18n": "tab_" + d, text: t("tab_" + d) });
        tab.addEventListener("click", function () { selectTab(panel, d); });
        tab.addEventListener("keydown", function (e) {
          var step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
          if (!step) return;
          e.preventDefault();
          var next = dims[(dims.indexOf(panelDims[panel.id]) + step + dims.length) % dims.length];
          selectTab(panel, next);
          $(panel.id + "-tab-" + next).focus();
        });
        tabs.appendChild(tab);
      });
      var csv = el("button", { type: "button", class: "csv", "data-endpoint": "breakdown", "data-panel": panel.id, "data-i18n": "csv", text: t("csv") });
      csv.addEventListener("click", function () { exportCsv("breakdown", panelDims[panel.id]); });
      panel.querySelector(".section-head").appendChild(csv);
      panel.appendChild(tabs);
      panel.appendChild(el("div", { id: panel.id + "-body", class: "panel-body", role: "tabpanel", "aria-live": "polite" }));
      panel.appendChild(el("p", { id: panel.id + "-notes", class: "notes" }));
    });
  }

  function selectTab(panel, dimension) {
    panelDims[panel.id] = dimension;
    panel.querySelectorAll("[role=tab]").forEach(function (tab) {
      var on = tab.getAttribute("data-dim") === dimension;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.setAttribute("tabindex", on ? "0" : "-1");
    });
    $(panel.id + "-body").setAttribute("aria-labelledby", panel.id + "-tab-" + dimension);
    if (token()) loadPanel(panel).catch(function (err) { status(t("error") + ": " + err.message, true); });
  }

  function loadPanel(panel) {
    var dimension = panelDims[panel.id];
    return getJSON("breakdown", endpointParams("breakdown", dimension)).then(function (body) {
      if (panelDims[panel.id] !== dimension) return;
      var visits = dimension === "entry_page" ? "entries" : dimension === "exit_page" ? "exits" : "visits";
      renderTable($(panel.id + "-body"), body.columns, body.results, "visitors", dimension, { visits: visits });
      panel.setAttribute("data-dimension", dimension);
      $(panel.id + "-notes").textContent = notesFor(body, true);
    });
  }

  function loadPanels() {
    return Promise.all([].map.call(document.querySelectorAll(".panel"), loadPanel));
  }

  // -- goals and funnels -------------------------------------------------------------------------

  function renderGoals(body) {
    var rows = body.results.map(function (r) {
      var label = (r.kind === "page" ? t("pageStep") : t("eventStep")) + " " + r.value;
      // A goal filters everything by its page or its event, like any other value.
      return { value: label, visitors: r.visitors, conversions: r.conversions, conversion_rate: r.conversion_rate,
        suppressed: r.suppressed, filterDim: r.kind === "page" ? "page" : "event_name", filterValue: r.value };
    });
    renderTable($("goals-table"), ["value", "visitors", "conversions", "conversion_rate"], rows, "visitors", "",
      { value: "goal", conversions: "completions" });
    $("goals-notes").textContent = [t("goalsNote"), notesFor(body, true)].join(" ");
  }

  function renderFunnel(body) {
    var box = $("funnel");
    box.textContent = "";
    var first = body.results.length ? body.results[0].visitors || 0 : 0;
    var list = el("ol", { class: "funnel-list" });
    body.results.forEach(function (r) {
      var fill = el("div", { class: "fill" });
      fill.style.width = (first && r.visitors ? Math.round(100 * r.visitors / first) : 0) + "%";
      var label = (r.kind === "page" ? t("pageStep") : t("eventStep")) + " " + r.value;
      var count = r.suppressed ? t("suppressed") : fmt(r.visitors) + " · " + fmt(r.conversion, "rate");
      list.appendChild(el("li", { class: "funnel-step" }, [
        el("span", { class: "step-label", text: label }),
        el("div", { class: "track", role: "img", "aria-label": label + ": " + count }, [fill]),
        el("span", { class: "num", "data-step": String(r.step), text: count })
      ]));
    });
    box.appendChild(list);
    if (!body.results.length && body.suppressed) box.appendChild(el("p", { class: "notes", text: notesFor(body) }));
  }

  function renderConsent(body) {
    var total = body.total || {};
    var rows = config.categories.map(function (c) { return { category: t(c), share: total[c] === undefined ? null : total[c] }; });
    var box = $("consent-total");
    box.textContent = "";
    box.appendChild(el("p", { text: t("choices") + ": " + (total.suppressed ? t("suppressedTotal") : fmt(total.choices)) }));
    renderTable(box.appendChild(el("div")), ["category", "share"], rows.map(function (r) {
      return { category: r.category, share: r.share === null ? null : fmt(r.share, "rate") };
    }));
    renderTable($("consent-days"), body.columns.filter(function (c) { return c !== "suppressed"; }), body.results);
  }

  // -- the cookie inventory: site facts (names, never values), for API tokens only -------------------

  var COOKIE_COLUMNS = ["name", "category", "set_by", "set_count", "request_count", "blocked", "before_consent",
    "lifetime", "flags", "seen", "paths"];

  // The inventory is read back from today (`days` days before it, to today): it starts at the range's start.
  function cookieDays() {
    var from = Date.parse($("from").value + "T00:00:00Z"), today = Date.parse(config.today + "T00:00:00Z");
    var days = isNaN(from) || isNaN(today) ? 90 : Math.round((today - from) / 86400000);
    return String(Math.min(3660, Math.max(1, days)));
  }

  function cookieParams(extra) {
    var p = new URLSearchParams();
    if ($("site").value) p.set("site", $("site").value);
    p.set("days", cookieDays());
    if ($("cookies-only").checked) p.set("unclassified", "1");
    Object.keys(extra || {}).forEach(function (k) { p.set(k, extra[k]); });
    return p;
  }

  function lifetimeText(c) {
    if (!c.set_count) return "—";
    if (c.lifetime_seconds === -1) return t("session");
    if (c.lifetime_seconds >= 86400) return t("lifeDays", { n: fmt(Math.round(c.lifetime_seconds / 86400)) });
    return t("lifeSeconds", { n: fmt(c.lifetime_seconds) });
  }

  function cookieCell(c, column) {
    if (column === "category") {
      var label = TEXT.en[c.category] ? t(c.category) : c.category;
      return el("td", { "data-source": c.source }, [
        el("span", { text: label }), el("span", { class: "source", text: t("src_" + c.source) })
      ]);
    }
    if (column === "set_by") return el("td", { text: t("set_by_" + c.set_by) });
    if (column === "lifetime") return el("td", { text: lifetimeText(c) });
    if (column === "flags") {
      var flags = [];
      if (c.http_only) flags.push("HttpOnly");
      if (c.secure) flags.push("Secure");
      if (c.same_site) flags.push("SameSite=" + c.same_site);
      return el("td", { class: "flags", text: c.set_count ? (flags.join(" ") || "—") : "—" });
    }
    if (column === "seen") {
      return el("td", { class: "seen" }, [el("span", { text: c.first_seen.slice(0, 10) }), el("span", { text: c.last_seen.slice(0, 10) })]);
    }
    if (column === "paths") {
      return el("td", { class: "paths", text: c.top_paths.map(function (p) { return p.path + " (" + fmt(p.count) + ")"; }).join(", ") || "—" });
    }
    var attrs = { class: "num", text: fmt(c[column]) };
    if (column === "before_consent") attrs["aria-describedby"] = "cookies-before-note";
    if ((column === "before_consent" || column === "blocked") && c[column] > 0) attrs["class"] = "num flagged";
    return el("td", attrs);
  }

  function renderCookies(body) {
    var box = $("cookies-table");
    box.textContent = "";
    var total = body.results.length, n = body.unclassified;
    var from = new Date(Date.parse(config.today + "T00:00:00Z") - body.query.days * 86400000).toISOString().slice(0, 10);
    // The date is kept on one line: a phone would otherwise break it at its hyphens.
    var parts = t(body.query.unclassified ? "cookiesUnclassifiedOnly" : n ? "cookiesCount" : "cookiesAllClassified",
      { n: fmt(n), total: fmt(total), from: "\u0000" }).split("\u0000");
    $("cookies-count").textContent = "";
    parts.forEach(function (part, i) {
      if (i) $("cookies-count").appendChild(el("span", { class: "date", text: from }));
      $("cookies-count").appendChild(document.createTextNode(part));
    });
    $("cookies-count").className = "cookies-count" + (n ? " warn" : "");
    $("cookies-hint").hidden = !n;
    if (body.overflow) $("cookies-count").textContent += " " + t("cookiesOverflow", { n: fmt(body.overflow) });
    if (!total) { box.appendChild(el("p", { class: "empty", text: t("nothing") })); return; }
    var head = el("tr", {}, COOKIE_COLUMNS.map(function (c) {
      var th = el("th", { scope: "col", class: ["name", "category", "set_by", "lifetime", "flags", "seen", "paths"].indexOf(c) >= 0 ? "" : "num", text: t("col_" + c) });
      if (c === "before_consent") th.setAttribute("aria-describedby", "cookies-before-note");
      return th;
    }));
    var rows = el("tbody");
    body.results.forEach(function (c) {
      var unclassified = c.source === "unclassified";
      var tr = el("tr", { class: unclassified ? "unclassified" : "", "data-cookie": c.name });
      tr.appendChild(el("th", { scope: "row", class: "name" }, [
        el("span", { class: "cookie-name", text: c.name }),
        unclassified ? el("span", { class: "badge", text: t("src_unclassified") }) : null
      ]));
      COOKIE_COLUMNS.slice(1).forEach(function (column) { tr.appendChild(cookieCell(c, column)); });
      rows.appendChild(tr);
    });
    // A focusable, labelled box: a keyboard scrolls the wide table with the arrow keys.
    box.appendChild(el("div", { class: "table-scroll cookie-scroll", tabindex: "0", role: "region", "aria-label": t("cookiesTable") }, [
      el("table", { class: "cookie-table" }, [el("thead", {}, [head]), rows])
    ]));
  }

  function loadCookies() {
    if (shareToken) return Promise.resolve();
    return call("cookies", cookieParams()).then(function (r) { return r.json(); }).then(renderCookies).catch(function (err) {
      $("cookies-table").textContent = "";
      $("cookies-table").appendChild(el("p", { class: "status error", text: t("cookiesError", { error: err.message }) }));
    });
  }

  function exportCookies() {
    call("cookies", cookieParams({ format: "csv" })).then(function (r) { return r.blob(); }).then(function (blob) {
      var a = el("a", { href: URL.createObjectURL(blob), download: "cookies-" + ($("site").value || config.site) + "-" + cookieDays() + "d.csv" });
      document.body.appendChild(a);
      a.click();
      a.remove();
    }).catch(function (err) { status(t("error") + ": " + err.message, true); });
  }

  // The pages and events the data holds (k applied by the API): offered for goals and funnel steps.
  var offered = [];

  function loadOptions() {
    return Promise.all([
      getJSON("breakdown", { dimension: "page", limit: "20" }, false),
      getJSON("breakdown", { dimension: "event_name", limit: "20" }, false)
    ]).then(function (answers) {
      var named = function (body) {
        return body.results.filter(function (r) { return r.value !== OTHER && r.value !== ""; });
      };
      var pages = named(answers[0]).map(function (r) { return "page:" + r.value; });
      var events = named(answers[1]).map(function (r) { return "event:" + r.value; });
      offered = { pages: pages, events: events };
      document.querySelectorAll(".step-options").forEach(function (select) {
        select.textContent = "";
        select.appendChild(el("option", { value: "", text: t("pick") }));
        pages.concat(events).forEach(function (v) {
          var kind = v.slice(0, 5) === "page:" ? t("pageStep") : t("eventStep");
          select.appendChild(el("option", { value: v, text: kind + " " + v.slice(v.indexOf(":") + 1) }));
        });
      });
      return offered;
    });
  }

  // The default funnel is offered from the data: the two most visited pages, then the most sent event.
  function suggestSteps() {
    if ($("steps").value.trim()) return $("steps").value.trim();
    var steps = offered.pages.slice(0, 2).concat(offered.events.slice(0, 1));
    if (steps.length >= 2) $("steps").value = steps.join(",");
    return steps.length >= 2 ? $("steps").value : "";
  }

  function loadFunnel() {
    if (!suggestSteps()) { $("funnel").textContent = t("funnelNeedsData"); return Promise.resolve(); }
    return getJSON("funnel", endpointParams("funnel")).then(renderFunnel);
  }

  function appendTo(input, value) {
    if (!value) return;
    var parts = input.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
    if (parts.indexOf(value) < 0 || input.id === "steps") parts.push(value);
    input.value = parts.join(",");
  }

  var loading = 0;

  function loadAll() {
    if (!token()) { status(t("needToken"), true); $("token").focus(); return Promise.resolve(); }
    if (!shareToken) {
      try { sessionStorage.setItem("cg-analytics-token", token()); } catch (e) { /* storage may be off */ }
    }
    saveUrl();
    var run = ++loading;
    document.body.removeAttribute("data-loaded");
    status(t("loading"));
    return Promise.all([
      getJSON("aggregate", endpointParams("aggregate")).then(renderHeadline),
      getRealtime(),
      getJSON("timeseries", endpointParams("timeseries")).then(renderChart),
      loadPanels(),
      getJSON("goals", endpointParams("goals")).then(renderGoals),
      loadOptions().then(loadFunnel),
      getJSON("consent-rates", {}, false).then(renderConsent),
      loadCookies()
    ]).then(function () {
      if (run !== loading) return;
      status(t("loaded"));
      document.body.setAttribute("data-loaded", "1");
    }).catch(function (err) { status(t("error") + ": " + err.message, true); });
  }

  function exportCsv(endpoint, dimension) {
    var extra = endpointParams(endpoint, dimension);
    delete extra.compare;
    extra.format = "csv";
    var withFilters = endpoint !== "consent-rates";
    call(endpoint, params(extra, withFilters)).then(function (r) { return r.blob(); }).then(function (blob) {
      var a = el("a", { href: URL.createObjectURL(blob), download: endpoint + "-" + $("from").value + "-" + $("to").value + ".csv" });
      document.body.appendChild(a);
      a.click();
      a.remove();
    }).catch(function (err) { status(t("error") + ": " + err.message, true); });
  }

  function setPreset() {
    var days = $("preset").value;
    if (days === "custom") return;
    var end = new Date(config.today + "T00:00:00Z");
    var start = new Date(end.getTime() - (parseInt(days, 10) - 1) * 86400000);
    $("from").value = start.toISOString().slice(0, 10);
    $("to").value = end.toISOString().slice(0, 10);
  }

  // A shared link carries its token in the fragment (#share=…), which the browser never sends to a server.
  function readShare() {
    var hash = new URLSearchParams(location.hash.slice(1));
    shareToken = hash.get("share") || "";
    if (!shareToken) return;
    $("token-field").hidden = true;
    $("site").readOnly = true;
    $("shared-note").hidden = false;
    // The cookie inventory is for the site's own operators: a shared link does not read it.
    $("panel-cookies").hidden = true;
  }

  function init() {
    var saved = null;
    try { saved = localStorage.getItem("cg-analytics-lang"); } catch (e) { /* ignore */ }
    readShare();
    if (!shareToken) {
      try { $("token").value = sessionStorage.getItem("cg-analytics-token") || ""; } catch (e) { /* ignore */ }
    }
    buildPanels();
    fetch("config").then(function (r) { return r.json(); }).then(function (c) {
      config = c;
      $("site").value = c.site;
      var query = new URLSearchParams(location.search);
      readUrl(query);
      var wanted = query.get("lang") || saved || c.locale || "ko";
      applyLang(wanted === "en" ? "en" : "ko");
      if (token()) loadAll();
    });
    $("lang").addEventListener("click", function () { applyLang(lang === "ko" ? "en" : "ko"); if (document.body.getAttribute("data-loaded")) loadAll(); });
    $("preset").addEventListener("change", setPreset);
    ["from", "to"].forEach(function (id) { $(id).addEventListener("change", function () { $("preset").value = "custom"; }); });
    $("controls").addEventListener("submit", function (e) { e.preventDefault(); loadAll(); });
    $("funnel-form").addEventListener("submit", function (e) {
      e.preventDefault();
      saveUrl();
      getJSON("funnel", endpointParams("funnel")).then(renderFunnel).catch(function (err) { status(t("error") + ": " + err.message, true); });
    });
    $("goals-form").addEventListener("submit", function (e) { e.preventDefault(); loadAll(); });
    $("step-add").addEventListener("change", function () { appendTo($("steps"), this.value); this.value = ""; });
    $("cookies-only").addEventListener("change", function () { if (token()) loadCookies(); });
    $("cookies-csv").addEventListener("click", exportCookies);
    $("goal-add").addEventListener("change", function () { appendTo($("goals"), this.value); this.value = ""; });
    var resizeTimer = 0;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(function () { if (lastSeries) renderChart(lastSeries); }, 100);
    });
    document.querySelectorAll("button.csv[data-endpoint]:not([data-panel])").forEach(function (b) {
      b.addEventListener("click", function () { exportCsv(b.getAttribute("data-endpoint")); });
    });
    // Visitors right now, refreshed every minute while the page is shown.
    setInterval(function () {
      if (token() && !document.hidden && document.body.getAttribute("data-loaded")) {
        getRealtime().catch(function () { /* shown on the next full load */ });
      }
    }, 60000);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
