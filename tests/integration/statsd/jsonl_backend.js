/*
 * A backend for Etsy's StatsD daemon that appends every flush to a file, one JSON object a line:
 *
 *   {"timestamp": 1700000000, "counters": {...}, "gauges": {...},
 *    "timers": {"name": [ms, ...]}, "timer_counters": {"name": n}}
 *
 * Counters hold what arrived since the previous flush (already scaled by the sample rate),
 * gauges their latest value, timers the raw observations of the interval and timer_counters
 * how many observations those stand for. The daemon's config names the file:
 *
 *   { backends: ["/abs/path/jsonl_backend.js"], jsonl: { path: "/abs/path/flushes.jsonl" } }
 *
 * Each line is written with a single append, so a reader sees whole lines, or a last line
 * without its newline yet that it must leave for later.
 */
"use strict";

const fs = require("fs");

exports.init = function init(startupTime, config, events, logger) {
  const path = config.jsonl && config.jsonl.path;
  if (typeof path !== "string" || path === "") {
    logger.log("jsonl backend: the config has no jsonl.path", "ERROR");
    return false;
  }
  let flushes = 0;
  let lastError = null;

  events.on("flush", function onFlush(timestamp, metrics) {
    const line = JSON.stringify({
      timestamp: timestamp,
      counters: metrics.counters,
      gauges: metrics.gauges,
      timers: metrics.timers,
      timer_counters: metrics.timer_counters,
    });
    try {
      fs.appendFileSync(path, line + "\n");
      flushes += 1;
    } catch (err) {
      // the daemon goes on; the test reading the file sees the flush missing and the log says why
      if (String(err) !== lastError) {
        logger.log("jsonl backend: cannot append to " + path + ": " + err, "ERROR");
      }
      lastError = String(err);
    }
  });

  events.on("status", function onStatus(write) {
    write(null, "jsonl", "flushes", flushes);
  });

  logger.log("jsonl backend: appending every flush to " + path, "INFO");
  return true;
};
