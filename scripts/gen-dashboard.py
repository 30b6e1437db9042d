#!/usr/bin/env python3
"""Writes the chart's Grafana dashboard (charts/mattermost-rtcd/dashboards/rtcd.json).

Two rows. The first carries the rtcd panels of Mattermost's Calls performance dashboard
(grafana.com 23225), with its variables ($rtcd, $rtcd_metrics_port) and the same series, so
every one of those queries works against rtcd-rs; where 23225 reads the Go runtime (go_goroutines,
go_memstats_*), the panel reads rtcd-rs's honest equivalent and says so. The second row is
rtcd-rs's own: placement load, engine shards, drops by reason, bandwidth and ICE-TCP share,
simulcast layers, NACK/RTX, join → first packet, limit refusals, and the operator's
connectivity canary. `make generate` runs this;
`make check-generated` fails on drift.
"""
import json
import sys
from pathlib import Path

SEL = 'instance=~"$rtcd:$rtcd_metrics_port"'
RATE = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}


class Panels:
    def __init__(self):
        self.items = []
        self.next_id = 1
        self.y = 0
        self.x = 0

    def row(self, title):
        if self.x:
            self.y += 8
            self.x = 0
        self.items.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.next_id += 1
        self.y += 1

    def ts(self, title, targets, unit="short", description=""):
        if self.x >= 24:
            self.x = 0
            self.y += 8
        panel = {
            "type": "timeseries",
            "id": self.next_id,
            "title": title,
            "datasource": DS,
            "gridPos": {"h": 8, "w": 8, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                        "tooltip": {"mode": "multi"}},
            "targets": [{"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i)}
                        for i, (e, l) in enumerate(targets)],
        }
        if description:
            panel["description"] = description
        self.items.append(panel)
        self.next_id += 1
        self.x += 8


def quantiles(metric, by="instance"):
    return [(f'histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))',
             f"p{int(q * 100)} {{{{{by}}}}}") for q in (0.5, 0.9, 0.99)]


def average(metric, by="instance"):
    return [(f"sum by ({by}) (rate({metric}_sum{{{SEL}}}[{RATE}])) / "
             f"sum by ({by}) (rate({metric}_count{{{SEL}}}[{RATE}]))", f"avg {{{{{by}}}}}")]


def build():
    p = Panels()
    p.row("rtcd (the panels of Mattermost's Calls performance dashboard, 23225)")
    p.ts("CPU usage", [(f"rate(rtcd_process_cpu_seconds_total{{{SEL}}}[{RATE}]) * 100", "{{instance}}")],
         "percent")
    p.ts("Memory", [
        (f"rtcd_process_heap_bytes{{{SEL}}}", "heap {{instance}}"),
        (f"rtcd_process_resident_memory_bytes{{{SEL}}}", "RSS {{instance}}"),
    ], "bytes", "23225 plots go_memstats_heap_inuse_bytes and go_memstats_stack_inuse_bytes. rtcd-rs "
       "is not a Go program: 'heap' is rtcd_process_heap_bytes (RssAnon: heap and thread stacks), "
       "next to the resident set. No go_* series is exported.")
    p.ts("Tasks and threads", [
        (f'rtcd_table_entries{{table="tokio_tasks",{SEL}}}', "tasks {{instance}}"),
        (f"rtcd_process_threads{{{SEL}}}", "threads {{instance}}"),
    ], "short", "23225 plots go_goroutines. rtcd-rs's equivalents: live async tasks "
       "(rtcd_table_entries{table=\"tokio_tasks\"}) and OS threads (rtcd_process_threads).")
    p.ts("WebSocket connections", [(f"sum by (instance) (rtcd_ws_connections_total{{{SEL}}})", "{{instance}}")])
    p.ts("WebSocket messages", [
        (f"sum by (type, direction) (rate(rtcd_ws_messages_total{{{SEL}}}[{RATE}]))", "{{direction}} {{type}}")],
        "ops")
    p.ts("RTC sessions", [(f"sum by (instance) (rtcd_rtc_sessions_total{{{SEL}}})", "{{instance}}")])
    p.ts("RTC connection states", [
        (f"sum by (type) (rate(rtcd_rtc_conn_states_total{{{SEL}}}[{RATE}]))", "{{type}}")], "ops")
    p.ts("RTC errors", [(f"sum by (type) (rate(rtcd_rtc_errors_total{{{SEL}}}[{RATE}]))", "{{type}}")], "ops")
    p.ts("RTP tracks", [
        (f"sum by (direction, type) (rtcd_rtc_rtp_tracks_total{{{SEL}}})", "{{direction}} {{type}}")])
    p.ts("Connection time", quantiles("rtcd_rtc_connection_time") + average("rtcd_rtc_connection_time"), "s")
    p.ts("Signaling lock grab time", quantiles("rtcd_rtc_signaling_lock_grab_time"), "s")
    p.ts("Signaling lock locked time", quantiles("rtcd_rtc_signaling_lock_locked_time"), "s")
    p.ts("Client RTT", quantiles("rtcd_rtc_client_rtt"), "s")
    p.ts("Client jitter", quantiles("rtcd_rtc_client_jitter"), "s")
    p.ts("Client loss rate", quantiles("rtcd_rtc_client_loss_rate"), "percentunit")
    p.ts("RTP track writes time", quantiles("rtcd_rtc_rtp_tracks_writes_time", "type"), "s")

    p.row("rtcd-rs")
    p.ts("Placement load (/system cpu_load)", [
        (f"rtcd_load_ratio{{{SEL}}}", "load {{instance}}"),
        (f"rtcd_cpu_utilization{{{SEL}}}", "CPU {{instance}}"),
        (f"rtcd_limit_usage_ratio{{{SEL}}}", "{{limit}} {{instance}}"),
    ], "short", "What the Calls plugin places new calls by (lowest wins): the largest of CPU "
       "utilisation and each capacity limit's usage, plus a decaying admission penalty; 2 or more "
       "is full (docs/placement.md).")
    p.ts("Engine shards", [
        (f"rtcd_engine_shard_sessions{{{SEL}}}", "sessions shard {{shard}} {{instance}}"),
        (f"rtcd_engine_healthy{{{SEL}}}", "healthy {{instance}}"),
    ])
    p.ts("Drops by reason", [
        (f"sum by (transport, reason) (rate(rtcd_net_dropped_total{{{SEL}}}[{RATE}]))", "{{transport}} {{reason}}"),
        (f"sum by (transport) (rate(rtcd_net_send_failed_total{{{SEL}}}[{RATE}]))", "send failed {{transport}}"),
    ], "pps")
    p.ts("Bandwidth", [
        (f"sum by (instance, direction) (rate(rtcd_net_bytes_total{{{SEL}}}[{RATE}])) * 8",
         "{{direction}} {{instance}}")], "bps")
    p.ts("Packets", [
        (f"sum by (instance, direction) (rate(rtcd_net_packets_total{{{SEL}}}[{RATE}]))",
         "{{direction}} {{instance}}")], "pps")
    p.ts("ICE-TCP share of media", [
        (f'sum by (instance) (rate(rtcd_net_bytes_total{{transport="tcp",{SEL}}}[{RATE}])) / '
         f"sum by (instance) (rate(rtcd_net_bytes_total{{{SEL}}}[{RATE}]))", "{{instance}}")],
        "percentunit", "Media carried over ICE-TCP: a rising share means UDP is blocked somewhere.")
    p.ts("Simulcast layers", [
        (f"sum by (layer) (rtcd_rtc_simulcast_viewers{{{SEL}}})", "viewers on {{layer}}"),
        (f"sum by (layer) (rate(rtcd_rtc_layer_switches_total{{{SEL}}}[{RATE}]))", "switches to {{layer}}"),
    ])
    p.ts("NACK / RTX and keyframes", [
        (f"sum by (direction) (rate(rtcd_rtc_nacks_total{{{SEL}}}[{RATE}]))", "NACK {{direction}}"),
        (f"sum by (direction) (rate(rtcd_rtc_keyframe_requests_total{{{SEL}}}[{RATE}]))", "PLI {{direction}}"),
    ], "ops")
    p.ts("Join → first packet", quantiles("rtcd_rtc_first_packet_time"), "s")
    p.ts("Refused by limits", [
        (f"sum by (limit) (rate(rtcd_limit_refusals_total{{{SEL}}}[{RATE}]))", "{{limit}}")], "ops")
    p.ts("Forwarded tracks and egress", [
        (f"rtcd_rtc_forwarded_tracks{{{SEL}}}", "tracks {{instance}}"),
        (f"rtcd_egress_bitrate{{{SEL}}}", "egress bit/s {{instance}}"),
    ])
    p.ts("Connectivity canary", [
        ("min by (node, transport) (rtcd_operator_probe_success)", "reachable {{transport}} {{node}}"),
        ("max by (node) (rtcd_operator_probe_failing)", "ProbeFailed {{node}}"),
    ], "short", "The operator's canary (spec.probe): 1 when its last one-person call reached the "
       "node's advertised address over that transport; ProbeFailed is 1 once failureThreshold "
       "probes in a row failed. Scraped from the operator, not from rtcd.")
    p.ts("Canary round trip and connect time", [
        ("max by (node, transport) (rtcd_operator_probe_rtt_seconds)", "RTT {{transport}} {{node}}"),
        ("max by (node, transport) (rtcd_operator_probe_connect_seconds)", "connect {{transport}} {{node}}"),
    ], "s", "From the operator's pod to each node's advertised address: the selected pair's STUN "
       "round trip, and join to ICE+DTLS connected.")

    return {
        "title": "rtcd-rs",
        "uid": "rtcd-rs",
        "description": "rtcd-rs: the rtcd panels of Mattermost's Calls performance dashboard (23225) "
                       "and rtcd-rs's own. 23225's node-exporter panels work unchanged (hostNetwork "
                       "pods share their node's address) and are not repeated.",
        "tags": ["mattermost", "calls", "rtcd"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
             "current": {}, "hide": 0},
            {"name": "rtcd", "type": "query", "label": "rtcd", "datasource": DS,
             "query": {"query": "label_values(rtcd_build_info, instance)", "refId": "rtcd"},
             "definition": "label_values(rtcd_build_info, instance)",
             "regex": "/([^:]+):.*/", "multi": True, "includeAll": True, "refresh": 2, "current": {},
             "hide": 0},
            {"name": "rtcd_metrics_port", "type": "custom", "label": "rtcd metrics port",
             "query": "8045", "current": {"text": "8045", "value": "8045"},
             "options": [{"text": "8045", "value": "8045", "selected": True}], "hide": 0},
        ]},
        "panels": p.items,
    }


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "charts/mattermost-rtcd/dashboards/rtcd.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
