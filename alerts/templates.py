"""Built-in message templates (Jinja2), per part and language: ``{part}.{lang}``.

Parts: ``sms`` (one alert), ``sms_group`` (a grouped storm), ``subject``, ``text`` (e-mail), ``markdown``
(WeCom / DingTalk). Chinese is the default language; English is available per receiver or by default.
A deployment can override any of them with files ``{part}.{lang}.j2`` in ``defaults.templates_dir``.
Kept in Python (not .j2 files) so they ship inside the package without package-data configuration.

Context: ``kind`` (alert | escalation | reminder | resolved | test | group), ``items`` (list of dicts, worst
first), ``lead`` (= items[0]), ``n``, ``site``, ``sites``, ``link``; each item has ``site device family kind
metric metric_name value threshold unit level level_name major status link ack_link action note`` and
``last_value at pct late outage clear_value clear_at``.

``value`` is the episode's PEAK (the worst reading of the ticket), ``at`` the site-local time it was measured,
``pct`` its percentage of the device's rating (crane rated load, breaker, RCD) when known. For late data (readings
a gateway buffered during an outage) ``note`` starts with the 补报 / late sentence: outage window, peak, the
clearing reading, how late the data arrived; the tag gets ·补报 / LATE. A resolution notice for a cleared
condition names the clearing reading's value and time when the ticket carries them.
"""

TEMPLATES: dict[str, str] = {
    # ------------------------------------------------------------------------------------------ Chinese
    "sms.zh": "【{{ tag }}】{{ lead.site }} {{ lead.device }} {{ lead.metric_name }}{{ lead.value }}{{ lead.unit }}"
              "{% if lead.threshold %} 阈值{{ lead.threshold }}{% endif %}{% if lead.major %} 重大隐患{% endif %}"
              " {{ link }}",
    "sms_group.zh": "【{{ tag }}×{{ n }}】{{ site }} {{ devices }}共{{ n }}处告警"
                    "{% if majors %} 含重大隐患{{ majors }}处{% endif %} {{ link }}",
    "subject.zh": "【{{ tag }}】{% if n > 1 %}{{ site }} {{ n }}处告警{% else %}{{ lead.site }} {{ lead.device }} "
                  "{{ lead.metric_name }}{% endif %}",
    "text.zh": """{{ headline }}
{% for it in items %}
- {{ it.site }} {{ it.device }}（{{ it.family_name }}）{{ it.metric_name }} {{ it.value }}{{ it.unit }}\
{% if it.pct %}（{{ it.pct }}%）{% endif %}{% if it.at %}，{{ it.at }}{% endif %}{% if it.threshold %}，阈值 {{ it.threshold }}{{ it.unit }}{% endif %}，{{ it.level_name }}\
{% if it.major %}，重大事故隐患（停工整改）{% endif %}{% if it.note %}。{{ it.note }}{% endif %}
  工单：{{ it.link }}{% if it.ack_link %}
  确认收到：{{ it.ack_link }}{% endif %}
{% endfor %}
—— SiteWatch 工地安全监测""",
    "markdown.zh": """### {{ headline }}
{% for it in items[:20] %}> **{{ it.site }} {{ it.device }}** {{ it.metric_name }} <font color="{{ it.color }}">\
{{ it.value }}{{ it.unit }}</font>{% if it.at %}（{{ it.at }}）{% endif %}{% if it.threshold %}（阈值 {{ it.threshold }}）{% endif %} {{ it.level_name }}\
{% if it.major %} **重大隐患**{% endif %}{% if it.note %}，{{ it.note }}{% endif %}
> [查看工单]({{ it.link }}){% if it.ack_link %} · [确认收到]({{ it.ack_link }}){% endif %}

{% endfor %}{% if n > 20 %}…另有 {{ n - 20 }} 条
{% endif %}""",
    # ------------------------------------------------------------------------------------------ English
    "sms.en": "[{{ tag }}] {{ lead.site }} {{ lead.device }} {{ lead.metric_name }} {{ lead.value }}{{ lead.unit }}"
              "{% if lead.threshold %} lim {{ lead.threshold }}{% endif %}{% if lead.major %} MAJOR{% endif %}"
              " {{ link }}",
    "sms_group.en": "[{{ tag }} x{{ n }}] {{ site }} {{ devices }}{% if majors %} {{ majors }} MAJOR{% endif %}"
                    " {{ link }}",
    "subject.en": "[{{ tag }}] {% if n > 1 %}{{ site }}: {{ n }} alarms{% else %}{{ lead.site }} {{ lead.device }} "
                  "{{ lead.metric_name }}{% endif %}",
    "text.en": """{{ headline }}
{% for it in items %}
- {{ it.site }} {{ it.device }} ({{ it.family }}) {{ it.metric_name }} {{ it.value }}{{ it.unit }}\
{% if it.pct %} ({{ it.pct }} %){% endif %}{% if it.at %} at {{ it.at }}{% endif %}{% if it.threshold %}, threshold {{ it.threshold }}{{ it.unit }}{% endif %}, {{ it.level_name }}\
{% if it.major %}, MAJOR HAZARD (stop work){% endif %}{% if it.note %}. {{ it.note }}{% endif %}
  Ticket: {{ it.link }}{% if it.ack_link %}
  Acknowledge: {{ it.ack_link }}{% endif %}
{% endfor %}
-- SiteWatch construction-site safety monitoring""",
    "markdown.en": """### {{ headline }}
{% for it in items[:20] %}> **{{ it.site }} {{ it.device }}** {{ it.metric_name }} <font color="{{ it.color }}">\
{{ it.value }}{{ it.unit }}</font>{% if it.at %} at {{ it.at }}{% endif %}{% if it.threshold %} (threshold {{ it.threshold }}){% endif %} {{ it.level_name }}\
{% if it.major %} **MAJOR**{% endif %}{% if it.note %}, {{ it.note }}{% endif %}
> [Ticket]({{ it.link }}){% if it.ack_link %} · [Acknowledge]({{ it.ack_link }}){% endif %}

{% endfor %}{% if n > 20 %}… and {{ n - 20 }} more
{% endif %}""",
}

WORDS = {
    "zh": {
        "level": {0: "已恢复", 1: "黄色", 2: "橙色", 3: "红色"},
        "kind": {"alert": "告警", "escalation": "升级", "reminder": "未整改提醒", "resolved": "已解除", "test": "测试",
                 "upgraded": "升级告警"},
        "family": {"crane": "塔吊", "formwork": "高支模", "pit": "深基坑", "electrical": "临时用电", "battery": "电池充电"},
        "metric": {"load": "起重量", "moment": "力矩", "wind": "风速", "tilt": "倾角", "settlement": "沉降",
                   "axial_force": "立杆轴力", "horizontal_displacement": "水平位移", "wall_top_horizontal": "墙顶水平位移",
                   "wall_top_vertical": "墙顶竖向位移", "deep_horizontal": "深层水平位移", "strut_force": "支撑轴力",
                   "groundwater_level": "地下水位", "surface_settlement": "地表沉降", "current_a": "A相电流",
                   "current_b": "B相电流", "current_c": "C相电流", "leakage": "漏电流", "terminal_temp": "端子温度",
                   "pack_temp": "电池包温度", "cell_temp": "电芯温度", "charge_current": "充电电流", "smoke": "烟雾",
                   "co": "一氧化碳"},
        "escalated": "{minutes}分钟未确认，升级通知",
        "reminder": "红色隐患尚未整改（第{k}次提醒）",
        "resolved": {"closed": "工单已关闭", "cleared": "监测值已恢复正常"},
        "test": "这是一条测试消息，请忽略",
        "headline": "【{tag}】{what}",
        "alarms": "{n}处告警",
        "units_time": {"s": "{n}秒", "min": "{n}分钟", "h": "{n}小时"},
        "cleared_at": "（{at} 读数 {value}）",
        "pct": "（{pct}%）",
        "late_what": "{family} {device} {metric}峰值 {value}{pct}",
        "late_in_outage": "补报：断网期间 {outage}，{what}",
        "late_at": "补报：{at} {what}",
        "late_cleared": "，{at} 已回落至 {value}",
        "late_delay": "，数据迟到 {delay}",
        "late_tag": "·补报",
        "sep": "。",
    },
    "en": {
        "level": {0: "clear", 1: "yellow", 2: "orange", 3: "RED"},
        "kind": {"alert": "ALERT", "escalation": "ESCALATED", "reminder": "REMINDER", "resolved": "RESOLVED",
                 "test": "TEST", "upgraded": "UPGRADED"},
        "family": {},
        "metric": {},
        "escalated": "not acknowledged for {minutes} min, escalated",
        "reminder": "red hazard still not rectified (reminder {k})",
        "resolved": {"closed": "ticket closed", "cleared": "reading back to normal"},
        "test": "this is a test message, please ignore",
        "headline": "[{tag}] {what}",
        "alarms": "{n} alarms",
        "units_time": {"s": "{n} s", "min": "{n} min", "h": "{n} h"},
        "cleared_at": " ({value} at {at})",
        "pct": " ({pct} %)",
        "late_what": "{family} {device} {metric} peaked at {value}{pct}",
        "late_in_outage": "late: during the outage {outage} {what}",
        "late_at": "late: at {at} {what}",
        "late_cleared": ", back to {value} at {at}",
        "late_delay": "; data arrived {delay} late",
        "late_tag": " LATE",
        "sep": ". ",
    },
}

UNITS = {"degC": "℃", "deg": "°"}
COLORS = {0: "info", 1: "warning", 2: "warning", 3: "warning"}
