//! The helper inside real interpreters (pyenv 3.11.7, 3.12.1, 3.13.0, Debian 3.11): each test
//! runs a script from `tests/python/` with the staged helper and asserts on the JSON it prints.
//! 3.11 scripts skip (one line) until the 3.11 bytecode patcher is merged.
use libdebugger_tests::helper::on_each_interpreter;
use serde_json::{Value, json};

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

#[test]
fn helper_structural_function_every_line() {
    on_each_interpreter("structural.py", 11, |i, r| {
        assert_eq!(r["mismatches"], json!([]), "{}: {r}", i.label);
        assert_eq!(r["count_mismatches"], json!([]), "{}: {r}", i.label);
        // A breakpoint on a `def` line fires once per call, at entry, on every version.
        assert_eq!(r["def_line_hits"], 1, "{}: {r}", i.label);
        assert_eq!(r["nested_def_line_hits"], 6, "{}: {r}", i.label);
        assert_eq!(r["tested"], r["lines"], "{}: every line tested", i.label);
        assert!(u(&r["tested"]) > 60, "{}: {r}", i.label);
        assert!(u(&r["executed_lines"]) > 40, "{}: {r}", i.label);
    });
}

#[test]
fn helper_every_function_kind() {
    on_each_interpreter("kinds.py", 11, |i, r| {
        let kinds = r["kinds"].as_object().expect("kinds");
        assert_eq!(kinds.len(), 11);
        for (k, v) in kinds {
            assert_eq!(v["status"], "armed", "{} {k}: {v}", i.label);
            assert!(u(&v["code_objects"]) >= 1, "{} {k}: {v}", i.label);
            assert!(u(&v["hits"]) >= 1, "{} {k}: {v}", i.label);
            assert!(
                v["top"][0].as_str().unwrap_or("").ends_with("kinds_mod.py"),
                "{} {k}: {v}",
                i.label
            );
        }
        assert_eq!(kinds["method"]["top"][1], "Thing.method");
        assert_eq!(kinds["closure"]["top"][1], "outer.<locals>.inner");
        assert_eq!(kinds["decorated"]["top"][1], "decorated");
        assert_eq!(kinds["property"]["top"][1], "Thing.prop");
        assert_eq!(kinds["generator"]["hits"], 3);
        assert_eq!(kinds["asyncgen"]["hits"], 2);
        assert_eq!(kinds["closure"]["locals"], json!(["x", "z"]));
    });
}

#[test]
fn helper_fires_in_a_loop_already_running() {
    on_each_interpreter("running_loop.py", 12, |i, r| {
        assert_eq!(r["status"], "armed", "{}: {r}", i.label);
        assert!(u(&r["hits"]) >= 1, "{}: {r}", i.label);
        assert_eq!(r["thread_name"], "worker-1", "{}: {r}", i.label);
        assert_eq!(r["thread_id_matches"], true, "{}: {r}", i.label);
        // The frame was mid-loop when armed.
        assert!(
            u(&r["locals"]["i"]) >= u(&r["iterations_before"]),
            "{}: {r}",
            i.label
        );
    });
}

#[test]
fn helper_deferred_import_and_reload() {
    on_each_interpreter("deferred.py", 11, |i, r| {
        assert_eq!(r["pending"], "pending", "{}: {r}", i.label);
        assert_eq!(r["finders_armed"], 1, "{}: {r}", i.label);
        assert_eq!(r["import_error"], "ModuleNotFoundError", "{}: {r}", i.label);
        assert_eq!(r["after_import"], "armed", "{}: {r}", i.label);
        assert_eq!(r["hits_after_import"], 1, "{}: {r}", i.label);
        assert_eq!(r["after_reload"], "armed", "{}: {r}", i.label);
        assert_eq!(r["code_objects_after_reload"], 2, "{}: {r}", i.label);
        assert_eq!(r["hits_after_reload"], 1, "{}: {r}", i.label);
        assert_eq!(r["reload_local_x"], 3, "{}: {r}", i.label);
        assert_eq!(r["old_function_hits"], json!([5]), "{}: {r}", i.label);
        // Code nothing can run any more is released on re-resolution.
        assert_eq!(r["code_objects_after_second_reload"], 1, "{}: {r}", i.label);
        assert_eq!(r["finders_after_removal"], 0, "{}: {r}", i.label);
        assert_eq!(r["hook_errors"], 0, "{}: {r}", i.label);
    });
}

#[test]
fn helper_removal_leaves_no_residue() {
    on_each_interpreter("removal.py", 11, |i, r| {
        assert_eq!(r["armed"], "armed", "{}: {r}", i.label);
        assert_eq!(r["hits_armed"], 1, "{}: {r}", i.label);
        assert_eq!(r["idempotent_hits_kept"], 1, "{}: {r}", i.label);
        assert_eq!(r["hits_after"], 0, "{}: {r}", i.label);
        assert_eq!(r["result_after"], 42, "{}: {r}", i.label);
        assert_eq!(r["finders"], 0, "{}: {r}", i.label);
        // The agent learns the armed code objects (to watch them in the kernel) and statuses:
        // the originals, and what new frames run (3.11: the instrumented copy).
        let msg = &r["code_objects_msg"];
        assert_eq!(msg.as_array().map(Vec::len), Some(1), "{}: {r}", i.label);
        assert_eq!(msg[0]["id"], "r", "{}: {r}", i.label);
        assert_eq!(
            msg[0]["code_objects"],
            json!([r["f_code_addr"]]),
            "{}: {r}",
            i.label
        );
        assert_eq!(
            msg[0]["running"].as_array().map(Vec::len),
            Some(1),
            "{}: {r}",
            i.label
        );
        if i.version >= (3, 12) {
            assert_eq!(
                msg[0]["running"], msg[0]["code_objects"],
                "{}: {r}",
                i.label
            );
        } else {
            assert_ne!(
                msg[0]["running"], msg[0]["code_objects"],
                "{}: {r}",
                i.label
            );
        }
        assert!(
            r["status_msg_ids"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("r"))),
            "{}: {r}",
            i.label
        );
        assert_eq!(r["status_after"]["breakpoints"], json!([]));
        assert_eq!(r["status_after"]["process"]["armed_code_objects"], 0);
        if i.version.1 >= 12 {
            assert!(r["tool_before"].is_u64(), "{}: {r}", i.label);
            assert_eq!(
                r["tool_after"],
                Value::Null,
                "{}: tool id released: {r}",
                i.label
            );
            assert_eq!(r["local_events_after"], 0, "{}: {r}", i.label);
        }
    });
}

#[test]
fn helper_conditions() {
    on_each_interpreter("conditions.py", 11, |i, r| {
        let expect: Vec<&str> = r["expect_fire"]
            .as_array()
            .expect("expect_fire")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for (k, fired) in r["fired"].as_object().expect("fired") {
            let c = &r["counters"][k];
            assert_eq!(c["hits"], 1, "{} {k}: {c}", i.label);
            if expect.contains(&k.as_str()) {
                assert_eq!(fired, 1, "{} {k} should fire: {c}", i.label);
            } else if k.starts_with("error_") {
                assert_eq!(fired, 0, "{} {k}: {c}", i.label);
                assert_eq!(c["errors"], 1, "{} {k}: {c}", i.label);
                assert!(c["last_error"].is_string(), "{} {k}: {c}", i.label);
            } else {
                assert_eq!(fired, 0, "{} {k}: {c}", i.label);
                assert_eq!(c["false"], 1, "{} {k}: {c}", i.label);
            }
        }
        let rejected = r["rejected"].as_object().expect("rejected");
        assert!(rejected.len() >= 30);
        for (src, s) in rejected {
            assert_eq!(s["status"], "error", "{} `{src}` accepted: {s}", i.label);
            assert!(
                s["reason"].as_str().unwrap_or("").contains("column"),
                "{} `{src}`: {s}",
                i.label
            );
        }
        assert_eq!(r["side_effects"], json!([]), "{}: {r}", i.label);
    });
}

#[test]
fn helper_hostile_objects() {
    on_each_interpreter("hostile.py", 11, |i, r| {
        assert_eq!(r["calls"], json!([]), "{}: user code ran: {r}", i.label);
        assert!(u(&r["hit_bytes"]) < 64 * 1024 + 4096, "{}: {r}", i.label);
        let o = &r["objs"];
        assert_eq!(o["raising"]["py/object"], "__main__.RaisingRepr");
        assert_eq!(o["raising"]["a"], 1);
        assert_eq!(o["evil_dict"], json!({"a": 1, "b": 2}));
        assert_eq!(o["evil_list"], json!([1, 2, 3]));
        assert_eq!(o["evil_set"], json!([1, 2]));
        assert_eq!(o["evil_int"], 5);
        assert_eq!(o["evil_str"], "abc");
        assert_eq!(o["nan"], "NaN");
        assert_eq!(o["inf"], "Infinity");
        assert_eq!(o["big_int"], "1267650600228229401496703205376");
        assert!(o["huge_int"].as_str().unwrap_or("").contains("bits"));
        let big = o["big"].as_array().expect("big list");
        assert_eq!(big.len(), 101, "{}: 100 items + cut marker", i.label);
        assert_eq!(big[100]["py/cut"], "items");
        assert_eq!(big[100]["more"], 10_000_000 - 100);
        assert!(
            o["deep"].to_string().contains("\"py/cut\":\"depth\""),
            "{}: deep={} truncated={} capture_us={}",
            i.label,
            o["deep"],
            r["truncated"],
            r["capture_us"]
        );
        // Cycles as jsonpickle's back-references to the container they repeat, numbered
        // in encoding order (the `objs` dict itself is 1).
        let refs: Vec<u64> = [&o["cyc"][1], &o["dcyc"]["self"], &o["node"]["me"]]
            .iter()
            .map(|r| {
                let obj = r.as_object().filter(|m| m.len() == 1);
                obj.and_then(|m| m["py/id"].as_u64())
                    .unwrap_or_else(|| panic!("{}: not a py/id reference: {r}", i.label))
            })
            .collect();
        assert!(refs.iter().all(|n| *n >= 2), "{}: {refs:?}", i.label);
        assert!(
            refs[0] < refs[1] && refs[1] < refs[2],
            "{}: distinct, in encoding order: {refs:?}",
            i.label
        );
        assert_eq!(o["slotted"]["x"], 1);
        assert_eq!(o["slotted"]["secret_token"], "[redacted]");
        assert_eq!(
            o["prop"],
            json!({"py/object": "__main__.PropObj", "plain": 1})
        );
        assert!(o["long_str"].as_str().unwrap_or("").contains("more chars"));
        let t = &r["truncated"];
        assert!(u(&t["items"]) >= 1 && u(&t["depth"]) >= 1 && u(&t["cycles"]) >= 3);
        assert!(u(&r["small_truncated"]["size"]) >= 1, "{}: {r}", i.label);
        assert!(
            r["elapsed_s"].as_f64().unwrap_or(1.0) < 0.5,
            "{}: {r}",
            i.label
        );
    });
}

#[test]
fn helper_redaction() {
    on_each_interpreter("redaction.py", 11, |i, r| {
        let d = &r["default"];
        for k in ["password", "user_pin", "db_password_hash"] {
            assert_eq!(d[k], "[redacted]", "{} {k}", i.label);
        }
        assert_eq!(d["spinner"], "spin");
        assert_eq!(d["author"], "bob");
        assert_eq!(d["iban"], "DE00");
        assert_eq!(d["creds"]["apiKey"], "[redacted]");
        assert_eq!(d["creds"]["username"], "ann");
        assert_eq!(d["creds"]["nested"]["refresh_token"], "[redacted]");
        assert_eq!(d["creds"]["nested"]["inner"]["Authorization"], "[redacted]");
        assert_eq!(d["headers"]["Cookie"], "[redacted]");
        assert_eq!(d["headers"]["X-CSRF-Token"], "[redacted]");
        assert_eq!(d["headers"]["Accept"], "json");
        let c = &r["custom"];
        assert_eq!(c["iban"], "[redacted]");
        assert_eq!(c["user_pin"], 1234);
        assert_eq!(c["password"], "[redacted]");
        assert!(
            !r.to_string().contains("hunter2"),
            "{}: secret leaked",
            i.label
        );
    });
}

#[test]
fn helper_rate_limits_and_budgets() {
    on_each_interpreter("rate_limits.py", 11, |i, r| {
        let d = &r["default"];
        assert_eq!(d["hits"], 1000, "{}: {d}", i.label);
        assert!((10..=11).contains(&u(&d["captured"])), "{}: {d}", i.label);
        assert_eq!(u(&d["captured"]) + u(&d["rate_limited"]), 1000);
        let p = &r["proc"];
        assert!((20..=21).contains(&u(&p["captured"])), "{}: {p}", i.label);
        assert_eq!(u(&p["captured"]) + u(&p["process_capped"]), 500);
        assert!(
            u(&r["deadline_truncated"]["deadline"]) >= 1,
            "{}: {r}",
            i.label
        );
        assert_eq!(r["deadline_counters"]["deadline_cut"], 1);
        let c = &r["cpu"];
        assert!(u(&c["throttled"]) >= 150, "{}: {c}", i.label);
        assert_eq!(r["cpu_status"], "throttled");
    });
}

#[test]
fn helper_concurrent_threads() {
    on_each_interpreter("concurrency.py", 11, |i, r| {
        assert_eq!(r["results_ok"], true);
        assert_eq!(r["hits_counter"], r["expected"], "{}: {r}", i.label);
        assert_eq!(
            u(&r["captured"]) + u(&r["dropped"]),
            u(&r["expected"]),
            "{}: every hit captured or, the queue full, counted as dropped: {r}",
            i.label
        );
        assert_eq!(
            r["delivered"], r["captured"],
            "{}: every capture delivered: {r}",
            i.label
        );
        assert!(u(&r["delivered"]) > 0);
        assert_eq!(r["misattributed"], 0, "{}: {r}", i.label);
    });
}

#[test]
fn helper_fork_child_keeps_breakpoints() {
    on_each_interpreter("fork.py", 11, |i, r| {
        assert_eq!(r["parent_hits"], 1, "{}: {r}", i.label);
        let c = &r["child"];
        assert_eq!(
            c["counters_before"]["hits"], 0,
            "{}: counters reset: {r}",
            i.label
        );
        assert_eq!(c["hits"], 2, "{}: {r}", i.label);
        assert_eq!(c["pids"], json!([c["child_pid"]]), "{}: {r}", i.label);
        assert_eq!(c["locals"], json!([2, 3]));
        assert_eq!(r["parent_after"], 1, "{}: {r}", i.label);
    });
}

#[test]
fn helper_fork_does_not_count_the_helper_thread() {
    on_each_interpreter("fork_warning.py", 11, |i, r| {
        // The helper thread exists (2 kernel threads) but is stopped for each fork: CPython
        // 3.12+ sees a single-threaded process and does not warn.
        assert_eq!(r["threads_before"], 2, "{}: {r}", i.label);
        assert_eq!(r["alive_before"], true, "{}: {r}", i.label);
        assert_eq!(r["warnings"], json!([]), "{}: {r}", i.label);
        assert_eq!(r["child"]["hits"], 1, "{}: {r}", i.label);
        // It comes back in the parent, on the same queue.
        assert_eq!(r["alive_after"], true, "{}: {r}", i.label);
        assert_eq!(r["parent_hits_after"], 1, "{}: {r}", i.label);
        assert_eq!(r["threads_after"], 2, "{}: {r}", i.label);
        // Forks while another thread hits the breakpoint, also from a non-main thread.
        assert_eq!(r["busy_children"], json!([0, 0, 0, 0]), "{}: {r}", i.label);
        assert_eq!(r["alive_after_busy"], true, "{}: {r}", i.label);
    });
}

#[test]
fn helper_attach_and_control_block() {
    on_each_interpreter("attach.py", 11, |i, r| {
        assert_eq!(r["imported_before"], false);
        assert_eq!(r["rc"], json!([0, 0]));
        assert_eq!(r["imported"], true, "{}: {r}", i.label);
        assert_eq!(r["magic"], "LDBGCTL1");
        assert_eq!(r["helper_pid_ok"], true);
        assert_eq!(r["acked"], true, "{}: {r}", i.label);
        if i.version.1 >= 12 {
            assert_eq!(r["status"][0]["status"], "armed", "{}: {r}", i.label);
            assert_eq!(r["hits"], 1, "{}: {r}", i.label);
            assert_eq!(r["hit_file_path"], "attach.py");
        }
        assert_eq!(r["acked_removal"], true);
        assert_eq!(r["after_removal"], json!([]));
    });
}

#[test]
fn helper_statuses_are_actionable() {
    on_each_interpreter("statuses.py", 11, |i, r| {
        let s = &r["statuses"];
        let reason = |k: &str| s[k]["reason"].as_str().unwrap_or("").to_string();
        assert_eq!(s["armed"]["status"], "armed", "{}: {r}", i.label);
        assert_eq!(s["armed"]["code_objects"], 1);
        assert_eq!(s["pending"]["status"], "pending");
        assert!(reason("pending").contains("imported"));
        assert_eq!(s["not_found"]["status"], "error");
        assert!(reason("not_found").contains("file not found"));
        assert_eq!(s["no_code"]["status"], "error");
        assert!(
            reason("no_code").contains("nearest lines with code: 5, 7"),
            "{}: {}",
            i.label,
            reason("no_code")
        );
        assert!(reason("module_level").contains("module-level"), "{r}");
        assert!(reason("ambiguous").contains("a/amb_mod.py"), "{r}");
        assert!(reason("ambiguous").contains("b/amb_mod.py"), "{r}");
        assert_eq!(s["disambiguated"]["status"], "armed");
        assert!(reason("syntax").contains("column 4"), "{r}");
        assert!(reason("bad_line").contains("seven"), "{r}");
        assert_eq!(s["symlink"]["status"], "armed", "{}: {r}", i.label);
        assert_eq!(
            r["hits"],
            json!({"armed": 1, "symlink": 1, "disambiguated": 1})
        );
        assert_eq!(r["results"], json!([2, 2, 1]));
        if i.version.1 >= 12 {
            assert_eq!(r["no_tool"]["status"], "error");
            assert!(
                r["no_tool"]["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no free sys.monitoring tool id")
            );
            assert_eq!(r["after_tools_freed"], "armed");
        }
    });
}

#[test]
fn helper_stack_matches_the_interpreter() {
    on_each_interpreter("stack.py", 11, |i, r| {
        assert_eq!(r["hits"], 8, "{}: {r}", i.label);
        assert_eq!(r["expected"], 8, "{}: {r}", i.label);
        for c in r["cases"].as_array().expect("cases") {
            assert_eq!(c["same"], true, "{}: {c}", i.label);
        }
        assert_eq!(
            r["cases"][6]["depth"], 64,
            "{}: capped at 64 frames",
            i.label
        );
    });
}

#[test]
fn helper_stress_changes_while_running() {
    on_each_interpreter("stress.py", 11, |i, r| {
        assert_eq!(r["errors"], json!([]), "{}: {r}", i.label);
        assert_eq!(r["callback_errors"], 0, "{}: {r}", i.label);
        assert_eq!(r["import_hook_errors"], 0, "{}: {r}", i.label);
        assert!(u(&r["callbacks"]) > 0, "{}: {r}", i.label);
        assert!(u(&r["hits_delivered"]) > 0, "{}: {r}", i.label);
        assert_eq!(r["tool_after"], Value::Null, "{}: {r}", i.label);
        assert_eq!(r["finders_after"], 0, "{}: {r}", i.label);
    });
}

/// 3.11 interpreters only: the hit path driven through the hook the patcher will insert.
#[test]
fn helper_py311_hit_path_through_the_hook() {
    on_each_interpreter("py311_hook.py", 11, |i, r| {
        assert_eq!(r["results"], json!([9, 15]), "{}: {r}", i.label);
        assert_eq!(
            r["fired"],
            json!({"plain": 2, "cond_true": 2, "glob": 2}),
            "{}: {r}",
            i.label
        );
        assert_eq!(r["counters"]["cond_false"]["condition_false"], 2);
        assert_eq!(r["counters"]["cond_err"]["condition_errors"], 2);
        let l = &r["locals"];
        assert_eq!(l["n"], 3);
        assert_eq!(l["cell"], 6, "{}: cell variable captured: {r}", i.label);
        assert_eq!(l["password"], "[redacted]");
        assert_eq!(l["obj"]["token"], "[redacted]");
        assert_eq!(l["obj"]["a"], json!([1, 2, {"k": "v"}]));
        assert_eq!(r["stack"][0][1], "target");
        assert_eq!(r["stack"][1][1], "main");
        assert_eq!(r["threads"], json!(["MainThread", "worker-311"]));
    });
}

#[test]
fn helper_def_and_decorator_lines() {
    on_each_interpreter("entry_lines.py", 11, |i, r| {
        let at = |k: &str| r[k]["at"].clone();
        let hits = |k: &str| u(&r[k]["hits"]);
        // A `def` line fires once per call, at entry, with only the arguments bound.
        for (k, n, f, locals) in [
            ("PLAIN_DEF", 2, "plain", "x,y"),
            ("MOD_DEF", 2, "top", "x,y"),
            ("MOD_ONELINE", 2, "two", "x"),
            ("GEN_DEF", 1, "gen", "n"),
            ("CORO_DEF", 1, "coro", "x"),
            ("METHOD_DEF", 1, "K.sm", "a"),
        ] {
            assert_eq!(r[k]["status"], "armed", "{} {k}: {r}", i.label);
            assert_eq!(hits(k), n, "{} {k}: {r}", i.label);
            assert_eq!(at(k), json!([[f, locals]]), "{} {k}: {r}", i.label);
        }
        // Nested: where the enclosing function executes the `def` statement (as settrace
        // reports the line: twice per statement, around the decorator call) plus once per call.
        assert_eq!(hits("NESTED_DEF"), 2 * (2 + 1), "{}: {r}", i.label);
        assert_eq!(
            at("NESTED_DEF"),
            json!([["outer", "v"], ["outer.<locals>.inner", "v,w"]]),
            "{}: {r}",
            i.label
        );
        // A decorator line is never the function's entry: only the enclosing code runs it.
        assert_eq!(hits("NESTED_DECO"), 2 * 2, "{}: {r}", i.label);
        assert_eq!(
            at("NESTED_DECO"),
            json!([["outer", "v"]]),
            "{}: {r}",
            i.label
        );
        for k in ["MOD_DECO", "MOD_DECO2", "METHOD_DECO"] {
            assert_eq!(r[k]["status"], "error", "{} {k}: {r}", i.label);
            assert!(
                r[k]["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("module-level code")),
                "{} {k}: {r}",
                i.label
            );
        }
        assert_eq!(r["hits_after_removal"], 0, "{}: {r}", i.label);
        assert_eq!(r["code_restored"], true, "{}: {r}", i.label);
    });
}

#[test]
fn helper_rearm_nested_and_partial_changes() {
    on_each_interpreter("rearm.py", 11, |i, r| {
        let steps = r["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 11, "{}: {r}", i.label);
        for s in steps {
            let ids: Vec<&str> = s["statuses"]
                .as_object()
                .expect("statuses")
                .keys()
                .map(String::as_str)
                .collect();
            // Every breakpoint armed, on exactly its own original code object, fired once.
            for id in &ids {
                assert_eq!(s["statuses"][id], "armed", "{} {s}", i.label);
                assert_eq!(s["hits"][id], 1, "{} {s}", i.label);
                let want = &id[..1];
                assert_eq!(s["armed_on"][id], json!([want]), "{} {s}", i.label);
            }
            // ...and nothing else fired.
            assert_eq!(
                s["hits"].as_object().map(|o| o.len()),
                Some(ids.len()),
                "{} {s}",
                i.label
            );
            if i.version.1 == 11 {
                // 3.11: a function runs a copy exactly while something in it (or, for the
                // parent, in its nested function) is armed.
                let armed = |p: &str| ids.iter().any(|id| id.starts_with(p));
                assert_eq!(
                    s["parent_is_original"],
                    !(armed("P") || armed("C")),
                    "{} {s}",
                    i.label
                );
                assert_eq!(s["child_is_original"], !armed("C"), "{} {s}", i.label);
                assert_eq!(s["multi_is_original"], !armed("M"), "{} {s}", i.label);
            }
        }
        // Removing everything puts back the identical original code objects everywhere,
        // including in a closure created while armed.
        let last = &steps[10];
        assert_eq!(last["step"], "nothing");
        for k in [
            "parent_is_original",
            "child_is_original",
            "multi_is_original",
        ] {
            assert_eq!(last[k], true, "{} {k}: {r}", i.label);
        }
        assert_eq!(r["early_child_is_original"], true, "{}: {r}", i.label);
        assert_eq!(r["armed_after"], 0, "{}: {r}", i.label);
    });
}

#[test]
fn helper_logpoints() {
    on_each_interpreter("logpoints.py", 11, |i, r| {
        assert_eq!(r["calls"], json!([]), "{}: user code ran: {r}", i.label);
        let initial = &r["initial"];
        for id in ["lp", "snap", "cond", "rate", "default-rate"] {
            assert_eq!(initial[id], "armed", "{} {id}: {r}", i.label);
        }
        // A message that does not parse is that logpoint's error, with the column.
        let broken = &r["statuses"]["broken"];
        assert_eq!(broken["status"], "error", "{}: {broken}", i.label);
        assert_eq!(broken["kind"], "logpoint");
        let reason = broken["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("message syntax error at column 4") && reason.contains("in messages"),
            "{}: {reason}",
            i.label
        );
        let spec = r["statuses"]["spec"]["reason"].as_str().unwrap_or("");
        assert!(spec.contains("format specs"), "{}: {spec}", i.label);
        // Three calls, three messages; the snapshot breakpoint on the same line still captures.
        let logs = r["logs"].as_array().expect("logs");
        assert_eq!(logs.len(), 3, "{}: {r}", i.label);
        assert_eq!(r["snap_count"], 3, "{}: {r}", i.label);
        let m = logs[0]["$message"].as_str().unwrap_or("");
        for part in [
            "subtotal=50 ",
            "coupon='BLACKFRIDAY' plain=BLACKFRIDAY ",
            "items=2 first=apple sum=51 ratio=12.5 ",
            "note=\"it's\" ",
            "cart=__main__.Cart(items=['apple', 'pear'], coupon='BLACKFRIDAY', owner=__main__.Creds(username='ann', apiKey=[redacted])) ",
            // Rendered from the copy: no __repr__/__str__/__format__, no __getattr__.
            "hostile=__main__.Hostile(a=1, name='h') hname=h ",
            "missing={nope!error: name `nope` is not defined} ",
            "bad={hostile.nothing!error: object of type __main__.Hostile has no readable attribute `nothing`} ",
            "pw=[redacted] key=[redacted] hdr=[redacted] ok=json braces={x}",
        ] {
            assert!(m.contains(part), "{}: {part:?} not in {m:?}", i.label);
        }
        assert!(!m.contains("hunter2") && !m.contains("k-123") && !m.contains("c=1"));
        let ev = &logs[0];
        assert_eq!(ev["$breakpoint_id"], "lp");
        assert_eq!(ev["$file_path"], "logpoints.py");
        assert_eq!(ev["$line_number"], r["line"]);
        assert_eq!(ev["$thread_name"], "MainThread");
        assert_eq!(ev["$thread_id"], r["main_thread_ident"]);
        assert!(ev["$timestamp"].as_str().unwrap_or("").ends_with('Z'));
        assert!(u(&ev["$pid"]) > 0);
        assert!(ev.get("$locals_variables").is_none() && ev.get("$stack_trace").is_none());
        assert_eq!(logs[2]["$thread_name"], "lp-worker");
        assert!(
            logs[2]["$message"]
                .as_str()
                .unwrap_or("")
                .starts_with("subtotal=7 ")
        );
        // The condition: only the call with subtotal > 100.
        assert_eq!(r["big"], json!(["big 150"]), "{}: {r}", i.label);
        let c = &r["statuses"]["cond"]["counters"];
        assert_eq!(
            (u(&c["hits"]), u(&c["condition_false"]), u(&c["captured"])),
            (3, 2, 1)
        );
        // Rate limits: 5 configured, 100 by default; the rest counted.
        if r["burst_elapsed"].as_f64().unwrap_or(1.0) < 0.05 {
            assert_eq!(r["rate_count"], 5, "{}: {r}", i.label);
            assert_eq!(r["default_rate_count"], 100, "{}: {r}", i.label);
        }
        for (id, sent) in [
            ("rate", &r["rate_count"]),
            ("default-rate", &r["default_rate_count"]),
        ] {
            let c = &r["statuses"][id]["counters"];
            assert_eq!(u(&c["hits"]), 1000, "{} {id}: {c}", i.label);
            assert_eq!(u(&c["captured"]), u(sent), "{} {id}: {c}", i.label);
            assert_eq!(
                u(&c["rate_limited"]),
                1000 - u(sent),
                "{} {id}: {c}",
                i.label
            );
        }
        // A module imported later; removal leaves nothing.
        assert_eq!(r["pending"], "pending", "{}: {r}", i.label);
        assert_eq!(r["after_import"], "armed", "{}: {r}", i.label);
        assert_eq!(r["later"], json!(["w=42 v=21"]), "{}: {r}", i.label);
        assert_eq!(r["after_removal"], json!([]), "{}: {r}", i.label);
        assert_eq!(r["listed_after_removal"], json!([]), "{}: {r}", i.label);
    });
}
