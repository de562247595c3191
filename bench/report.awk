# Summarises bench/results/runs.tsv (written by bench/run.sh) as Markdown: per
# scenario and mode, the median over rounds and the min–max spread, the ratio of the
# gateway's CPU to the reference services' in the same runs, the ratio to the direct
# gRPC floor of the same RPC, and the callgrind counts per scenario (-v callgrind=FILE,
# bench/results/callgrind.tsv). The targets of issue 13 are checked at the end.

function sort_numeric(list, a,    n, i, j, t) {
  n = split(list, a, " ")
  for (i = 2; i <= n; i++) {
    t = a[i] + 0
    for (j = i - 1; j > 0 && a[j] + 0 > t; j--) a[j + 1] = a[j]
    a[j + 1] = t
  }
  return n
}
function median(list,    a, n) {
  n = sort_numeric(list, a)
  if (n == 0) return ""
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function spread(list, fmt, scale,    a, n) {
  n = sort_numeric(list, a)
  if (n < 2) return ""
  return sprintf(" [" fmt "–" fmt "]", a[1] * scale, a[n] * scale)
}
# "median [min–max]" of one metric, scaled and formatted; "–" when not measured.
function cell(key, metric, fmt, scale) {
  if (!((key, metric) in measured)) return "–"
  return sprintf(fmt, median(values[key, metric]) * scale) spread(values[key, metric], fmt, scale)
}
function floor_of(scenario) {
  if (scenario ~ /^floor-/) return ""
  if (scenario ~ /^cached-/ || scenario ~ /^read/) return "floor-read"
  return "floor-" scenario
}

BEGIN {
  # The before build and this one, measured in turn on this machine (bench/levers.sh).
  if (levers != "") {
    while ((getline line < levers) > 0) {
      split(line, f, "\t")
      if (f[1] == "before" || f[1] == "now" || f[1] == "now-current") { lever_rate[f[1]] = f[7]; lever_max[f[1]] = f[8]; lever_commit[f[1]] = f[2] }
    }
  }
  if (callgrind != "") {
    while ((getline line < callgrind) > 0) {
      split(line, f, "\t")
      if (f[1] == "scenario") continue
      instructions[f[1]] = f[3]; allocations[f[1]] = f[4]
    }
  }
}

NR == 1 {
  for (i = 1; i <= NF; i++) col[$i] = i
  next
}
$col["state"] == "ok" {
  key = $col["scenario"] SUBSEP $col["mode"]
  if (!(key in seen)) { seen[key] = 1; order[++count] = key; target[key] = $col["target_rps"] }
  split("rps p50_us p90_us p99_us gw_cpu_us_per_req gw_user_us_per_req gw_sys_us_per_req gw_rss_kb svc_cpu_us_per_req gw_switches_per_req svc_switches_per_req", metrics, " ")
  for (m in metrics) {
    v = $col[metrics[m]]
    if (v != "-" && v != "") {
      values[key, metrics[m]] = values[key, metrics[m]] " " v
      measured[key, metrics[m]] = 1
    }
  }
  requests[key] += $col["requests"]
  non2xx[key] += $col["non_2xx"] + $col["socket_errors"]
}

END {
  print "| scenario | mode | req/s | p50 ms | p90 ms | p99 ms | gateway CPU µs/req | of which sys | services CPU µs/req | gateway ÷ services CPU | vs floor: req/s | vs floor: p50 | vs floor: p99 | context switches/req: gateway · services | allocations/req | instructions/req | gateway RSS MiB | not 2xx |"
  print "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for (i = 1; i <= count; i++) {
    key = order[i]
    split(key, part, SUBSEP)
    scenario = part[1]; mode = part[2]
    label = mode == "max" ? "max" : "rate " target[key] "/s"
    fkey = floor_of(scenario) SUBSEP mode
    ratio_rps = ratio_p50 = ratio_p99 = ratio_svc = "–"
    if (floor_of(scenario) != "" && values[fkey, "rps"] != "") {
      ratio_rps = sprintf("%.2f×", median(values[key, "rps"]) / median(values[fkey, "rps"]))
      ratio_p50 = sprintf("%.2f×", median(values[key, "p50_us"]) / median(values[fkey, "p50_us"]))
      ratio_p99 = sprintf("%.2f×", median(values[key, "p99_us"]) / median(values[fkey, "p99_us"]))
    }
    gw = median(values[key, "gw_cpu_us_per_req"]); svc = median(values[key, "svc_cpu_us_per_req"])
    if ((key, "gw_cpu_us_per_req") in measured && svc > 0) ratio_svc = sprintf("%.2f×", gw / svc)
    ratio[key] = svc > 0 ? gw / svc : ""
    p99_ratio[key] = (floor_of(scenario) != "" && values[fkey, "p99_us"] != "") ? median(values[key, "p99_us"]) / median(values[fkey, "p99_us"]) : ""
    bad = non2xx[key] ? sprintf("%.1f%%", 100 * non2xx[key] / requests[key]) : "0"
    name = scenario ~ /^floor-/ ? "*" scenario "* (direct gRPC)" : scenario
    # read-current serves the same request path as read (another runtime).
    cg = scenario == "read-current" ? "read" : scenario
    allocs = allocations[cg] != "" ? allocations[cg] : "–"
    instr = instructions[cg] != "" ? instructions[cg] : "–"
    switches = cell(key, "gw_switches_per_req", "%.2f", 1) " · " cell(key, "svc_switches_per_req", "%.2f", 1)
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name, label,
      cell(key, "rps", "%.0f", 1), cell(key, "p50_us", "%.2f", 0.001), cell(key, "p90_us", "%.2f", 0.001),
      cell(key, "p99_us", "%.2f", 0.001), cell(key, "gw_cpu_us_per_req", "%.1f", 1),
      cell(key, "gw_sys_us_per_req", "%.1f", 1), cell(key, "svc_cpu_us_per_req", "%.1f", 1), ratio_svc,
      ratio_rps, ratio_p50, ratio_p99, switches, allocs, instr, cell(key, "gw_rss_kb", "%.1f", 1 / 1024), bad
  }
  print ""
  print "Allocations and instructions per request come from the callgrind pass (sequential"
  print "requests, so the same figure stands for both loads); the other columns from the runs."
  print ""
  print "**Targets of issue 13** (uncached read; `read` with the default runtime, `read-current` with"
  print "`current_thread`, the README's choice for a 2-CPU machine shared with other work like this one):"
  print ""
  for (i = 1; i <= count; i++) {
    key = order[i]
    split(key, part, SUBSEP)
    if ((part[1] != "read" && part[1] != "read-current") || !((key, "gw_cpu_us_per_req") in measured)) continue
    cpu = median(values[key, "gw_cpu_us_per_req"])
    if (part[2] == "max") {
      printf "- %s at saturation: gateway CPU %.1f µs per request; %s the reference services' own CPU per request (≤ 1.3× wanted; 2.1× before); p99 %s the floor's (≤ 2× wanted)\n",
        part[1], cpu, ratio[key] != "" ? sprintf("%.2f×", ratio[key]) : "–", p99_ratio[key] != "" ? sprintf("%.2f×", p99_ratio[key]) : "–"
    } else {
      printf "- %s at %s req/s: gateway CPU %.1f µs per request, %s the services' own\n",
        part[1], target[key], cpu, ratio[key] != "" ? sprintf("%.2f×", ratio[key]) : "–"
    }
  }
  if (lever_rate["before"] > 0 && lever_rate["now"] > 0 && lever_max["now"] > 0) {
    printf "- halving, against the before build (%s) measured in turn with this one (%s) on this machine by `bench/levers.sh` (table below; ≥ 2× less at the moderate rate wanted): %.1f → %.1f µs per request at the moderate rate (%.2f× less), %.1f → %.1f µs at full load (%.2f× less)",
      lever_commit["before"], lever_commit["now"], lever_rate["before"], lever_rate["now"], lever_rate["before"] / lever_rate["now"],
      lever_max["before"], lever_max["now"], lever_max["before"] / lever_max["now"]
    if (lever_rate["now-current"] > 0)
      printf "; with `current_thread` %.1f µs (%.2f× less) and %.1f µs (%.2f× less)",
        lever_rate["now-current"], lever_rate["before"] / lever_rate["now-current"],
        lever_max["now-current"], lever_max["before"] / lever_max["now-current"]
    print ""
  }
}
