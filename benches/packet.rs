//! Hot paths, in rows per second: pgoutput decoding, batching and Arrow
//! encoding on the capture side, and reading a part into COPY text on the
//! apply side. `cargo bench --bench packet`.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use relaysync::capture::batch::{Batcher, Bounds, Captured, Routing};
use relaysync::packet::{encode_part, read_part, ColumnShape, TableShape};
use relaysync::pgoutput::{decode, Message, Value};

const ROWS: usize = 50_000;

fn shape() -> Arc<TableShape> {
    let col = |name: &str, oid: u32, typmod: i32, pg: &str| ColumnShape {
        name: name.into(),
        type_oid: oid,
        type_modifier: typmod,
        pg_type: pg.into(),
        ..Default::default()
    };
    Arc::new(TableShape {
        name: "public.items".into(),
        columns: vec![
            col("id", 20, -1, "bigint"),
            col("name", 25, -1, "text"),
            col("qty", 23, -1, "integer"),
            col("price", 1700, (10 << 16 | 2) + 4, "numeric(10,2)"),
            col("at", 1184, -1, "timestamp with time zone"),
        ],
        key: vec![0],
        cascade: Vec::new(),
        partitions: Vec::new(),
    })
}

/// pgoutput Insert messages as the walsender sends them.
fn inserts() -> Vec<Bytes> {
    (0..ROWS)
        .map(|i| {
            let vals = [
                i.to_string(),
                format!("item {i}"),
                (i % 1000).to_string(),
                format!("{}.{:02}", i % 1000, i % 100),
                "2024-01-01 00:00:00.123456+00".to_string(),
            ];
            let mut b = vec![b'I'];
            b.put_u32(16384);
            b.put_u8(b'N');
            b.put_i16(vals.len() as i16);
            for v in &vals {
                b.put_u8(b't');
                b.put_i32(v.len() as i32);
                b.put_slice(v.as_bytes());
            }
            Bytes::from(b)
        })
        .collect()
}

fn batch(messages: &[Bytes]) -> Vec<relaysync::packet::Change> {
    let mut batcher = Batcher::new(Bounds {
        max_rows: ROWS,
        max_bytes: 1 << 30,
    });
    batcher.relation(
        16384,
        Captured {
            shape: shape(),
            routing: Routing::All,
            referenced: None,
        },
    );
    for m in messages {
        if let Ok(Message::Insert { relation, new }) = decode(m.clone()) {
            batcher.insert(relation, new, 1);
        }
    }
    batcher.seal();
    let mut sealed = batcher.take_sealed();
    sealed.remove(0).parts.remove(0).changes
}

fn benches(c: &mut Criterion) {
    let messages = inserts();
    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    g.bench_function("pgoutput_decode", |b| {
        b.iter(|| {
            messages
                .iter()
                .filter(|m| matches!(decode((*m).clone()), Ok(Message::Insert { .. })))
                .count()
        })
    });
    g.bench_function("batch_and_compact", |b| b.iter(|| batch(&messages).len()));
    let changes = batch(&messages);
    assert!(changes
        .iter()
        .all(|c| !c.values.contains(&Value::Unchanged)));
    g.bench_function("arrow_encode", |b| {
        b.iter(|| encode_part(&shape(), &changes).unwrap().len())
    });
    let part = encode_part(&shape(), &changes).unwrap();
    g.bench_function("read_to_copy_text", |b| {
        b.iter(|| {
            let p = read_part(&part).unwrap();
            let mut out = Vec::new();
            for i in 0..p.batch_count() {
                p.write_copy_text(i, &mut out);
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(packet, benches);
criterion_main!(packet);
