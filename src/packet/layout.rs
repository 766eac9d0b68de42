//! Where a part's columns are: the data columns, and the bookkeeping
//! columns marked by their field metadata (see [`super::META_ROLE`]).

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::{
    PacketError, PartColumn, COL_LSN, COL_OP, COL_ORIGIN, COL_UNCHANGED, META_DEFAULT,
    META_IDENTITY, META_MISSING, META_NOT_NULL, META_PG_TYPE, META_ROLE, ROLE_LSN, ROLE_OP,
    ROLE_ORIGIN, ROLE_UNCHANGED,
};

/// Where a part's columns are in its schema (every batch has the same).
#[derive(Debug, Clone, Default)]
pub(crate) struct Layout {
    /// The data columns, in order.
    pub(crate) data: Vec<usize>,
    pub(crate) op: usize,
    pub(crate) unchanged: Option<usize>,
    pub(crate) origin: Option<usize>,
}

/// The bookkeeping role of a field: its [`META_ROLE`] metadata; in a part
/// written before bookkeeping fields were marked (none is), its name.
fn role(field: &Field, marked: bool) -> Option<&str> {
    if marked {
        return field.metadata().get(META_ROLE).map(String::as_str);
    }
    match field.name().as_str() {
        COL_OP => Some(ROLE_OP),
        COL_LSN => Some(ROLE_LSN),
        COL_UNCHANGED => Some(ROLE_UNCHANGED),
        COL_ORIGIN => Some(ROLE_ORIGIN),
        _ => None,
    }
}

/// Reads the schema's fields into data columns and the bookkeeping layout.
pub(super) fn layout(schema: &Schema) -> Result<(Vec<PartColumn>, Layout), PacketError> {
    let invalid = |m: String| PacketError::Invalid(m);
    let marked = schema
        .fields()
        .iter()
        .any(|f| f.metadata().contains_key(META_ROLE));
    let (mut columns, mut layout, mut op) = (Vec::new(), Layout::default(), None);
    for (i, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        let utf8 = field.data_type() == &DataType::Utf8;
        let slot = match role(field, marked) {
            Some(ROLE_OP) if utf8 => &mut op,
            Some(ROLE_ORIGIN) if utf8 => &mut layout.origin,
            Some(ROLE_UNCHANGED) => match field.data_type() {
                DataType::List(inner) if inner.data_type() == &DataType::Utf8 => {
                    &mut layout.unchanged
                }
                _ => return Err(invalid(format!("{name} is not a list of Utf8"))),
            },
            Some(ROLE_LSN) => continue,
            Some(ROLE_OP | ROLE_ORIGIN) => return Err(invalid(format!("{name} is not Utf8"))),
            Some(other) => return Err(invalid(format!("{name} has an unknown role {other}"))),
            None => {
                let pg_type = field
                    .metadata()
                    .get(META_PG_TYPE)
                    .ok_or_else(|| invalid(format!("column {name} has no relaysync.pg_type")))?;
                if !supported(field.data_type()) {
                    return Err(invalid(format!(
                        "column {name} has Arrow type {} that relaysync does not read",
                        field.data_type()
                    )));
                }
                let meta = field.metadata();
                columns.push(PartColumn {
                    name: name.to_string(),
                    pg_type: pg_type.clone(),
                    not_null: meta.get(META_NOT_NULL).is_some_and(|v| v == "true"),
                    missing: meta.get(META_MISSING).cloned(),
                    identity: meta.get(META_IDENTITY).is_some_and(|v| v == "true"),
                    default: meta.get(META_DEFAULT).cloned(),
                });
                layout.data.push(i);
                continue;
            }
        };
        if slot.replace(i).is_some() {
            return Err(invalid(format!("two bookkeeping columns like {name}")));
        }
    }
    layout.op = op.ok_or_else(|| invalid("no _op column".into()))?;
    Ok((columns, layout))
}

fn supported(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Date32
            | DataType::Timestamp(TimeUnit::Microsecond, _)
            | DataType::Decimal128(_, _)
            | DataType::Binary
            | DataType::Utf8
            | DataType::LargeUtf8
    )
}
