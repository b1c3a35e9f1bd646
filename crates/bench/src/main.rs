//! tandem-bench command line (temporary: fan-out only).
use std::sync::Arc;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let args: Vec<String> = std::env::args().collect();
        let addr = args.get(1).cloned().unwrap_or("127.0.0.1:1234".into());
        let prefix = args.get(2).cloned().unwrap_or("/".into());
        let point = args.get(3).cloned().unwrap_or("10x5@10".into());
        let target = tandem_bench::target::Target::external(
            "x",
            &addr,
            &prefix,
            args.get(4).and_then(|p| p.parse().ok()),
            false,
        );
        let (trace, _) = tandem_bench::trace::Trace::load_or_generate(
            std::path::Path::new("/work/shared/traces"),
            "seph-blog1.json.gz",
            20000,
        )?;
        let p =
            tandem_bench::workloads::fanout::FanoutParams::parse(&point, Duration::from_secs(5))?;
        let row = tandem_bench::workloads::fanout::run_row(&target, Arc::new(trace), &p, "t").await;
        println!("{}", tandem_bench::report::HEADER);
        row.print();
        Ok(())
    })
}
