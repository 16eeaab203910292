//! Micro-benchmark: route matching cost with 10 and with 10,000 routes (host and prefix
//! routes), to show it does not grow with the number of routes, and the cost of a match
//! with captures by a path template and by a path regex. Run with
//! `cargo bench -p coregate-engine --bench route_match`; prints ns per lookup and the ratio.

use std::hint::black_box;
use std::time::Instant;

use config::Config;
use engine::RouteTable;

fn config(n: usize) -> Config {
    let mut text = String::from(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"u\"\nendpoints = [\"127.0.0.1:2\"]\n",
    );
    for i in 0..n {
        // Half host routes, half prefix routes under a shared parent.
        if i % 2 == 0 {
            text.push_str(&format!(
                "[[routes]]\nhost = \"svc{i}.example.com\"\npath = \"/api/v1/items\"\nupstream = \"u\"\n"
            ));
        } else {
            text.push_str(&format!("[[routes]]\npath = \"/tenants/t{i}/orders\"\nupstream = \"u\"\n"));
        }
    }
    text.push_str("[[routes]]\npath = \"/\"\nupstream = \"u\"\n");
    Config::parse(&text).expect("valid")
}

fn measure(n: usize) -> f64 {
    let cfg = config(n);
    let table = RouteTable::new(&cfg.routes);
    let hosts: Vec<String> = (0..n).step_by(2).map(|i| format!("svc{i}.example.com")).collect();
    let paths: Vec<String> = (1..n).step_by(2).map(|i| format!("/tenants/t{i}/orders/42/lines")).collect();
    let iters = 2_000_000usize;
    let start = Instant::now();
    let mut found = 0usize;
    for k in 0..iters {
        let r = if k % 2 == 0 {
            table.find(Some(hosts[k / 2 % hosts.len()].as_bytes()), b"/api/v1/items/7", &cfg.routes, &|_| true)
        } else {
            table.find(Some(b"other.example.com"), paths[k / 2 % paths.len()].as_bytes(), &cfg.routes, &|_| true)
        };
        found += black_box(r).is_some() as usize;
    }
    assert_eq!(found, iters);
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// ns per lookup and capture of a path matched by the one route of kind `path_key`.
fn measure_captures(path_key: &str, path: &[u8]) -> f64 {
    let cfg = Config::parse(&format!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[[upstreams]]\nname = \"u\"\nendpoints = [\"127.0.0.1:2\"]\n\
         [[routes]]\n{path_key}\nupstream = \"u\"\nrewrite = \"/{{id}}\"\n[[routes]]\npath = \"/\"\nupstream = \"u\"\n"
    ))
    .expect("valid");
    let table = RouteTable::new(&cfg.routes);
    let iters = 1_000_000usize;
    let start = Instant::now();
    for _ in 0..iters {
        let i = table.find(None, black_box(path), &cfg.routes, &|_| true).expect("a route");
        assert_eq!(black_box(table.captures(&cfg.routes, i, path)).len(), 1);
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn main() {
    let small = measure(10);
    let large = measure(10_000);
    println!(
        "route match: {small:.0} ns/lookup with 10 routes, {large:.0} ns/lookup with 10,000 routes (ratio {:.2})",
        large / small
    );
    let template = measure_captures("path_template = \"/users/{id}/orders\"", b"/users/12345/orders");
    let regex = measure_captures("path_regex = '/users/(?P<id>[0-9]+)/orders'", b"/users/12345/orders");
    println!("match and captures: {template:.0} ns by a path template, {regex:.0} ns by a path regex");
}
