//! Thin PyO3 bindings of `inplay-core` as `inplay._core`.
//!
//! Every batch function works in three steps: convert the Python inputs to Rust values while attached to
//! the interpreter (errors name the item index), compute with the GIL released (`Python::detach`), then
//! build the result list. Integers that do not fit the core's types become the core's typed errors, never a
//! bare `OverflowError` from the conversion.

use inplay_core::band::JumpBand as CoreJumpBand;
use inplay_core::odds_record::{encode_odds_record, Change, OddsRecord};
use inplay_core::price_items::{encode_price_items as core_encode_price_items, PriceItem, Selection};
use inplay_core::{
    check_quote, potential_return as core_potential_return, settle_bet, CoreError, LegOutcome, Odds, Policy,
    QuoteInput, SettleLeg,
};
use pyo3::exceptions::{PyException, PyOverflowError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};

// ---------------------------------------------------------------------------------------------- errors

/// The module's exception classes, made once at import (they need two bases, e.g. `(CoreError, ValueError)`,
/// which `create_exception!` cannot express).
struct Errors {
    core: Py<PyType>,
    invalid_odds: Py<PyType>,
    invalid_stake: Py<PyType>,
    invalid_core_input: Py<PyType>,
    overflow: Py<PyType>,
}

static ERRORS: PyOnceLock<Errors> = PyOnceLock::new();

fn new_exception(py: Python<'_>, name: &str, doc: &str, bases: &[&Bound<'_, PyType>]) -> PyResult<Py<PyType>> {
    let namespace = PyDict::new(py);
    namespace.set_item("__module__", "inplay._core")?;
    namespace.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let made = py.get_type::<PyType>().call1((name, bases, namespace))?;
    Ok(made.cast_into::<PyType>()?.unbind())
}

fn make_errors(py: Python<'_>) -> PyResult<Errors> {
    let core = new_exception(
        py,
        "CoreError",
        "Base of every error raised by the Rust core.",
        &[&py.get_type::<PyException>()],
    )?;
    let base = core.bind(py);
    let value_error = py.get_type::<PyValueError>();
    let overflow_error = py.get_type::<PyOverflowError>();
    Ok(Errors {
        invalid_odds: new_exception(
            py,
            "InvalidOdds",
            "Malformed odds, or odds outside (1, 10000] or with a reduced denominator above 1,000,000.",
            &[base, &value_error],
        )?,
        invalid_stake: new_exception(
            py,
            "InvalidStake",
            "A stake that is not a positive i64 amount.",
            &[base, &value_error],
        )?,
        invalid_core_input: new_exception(
            py,
            "InvalidCoreInput",
            "A bad policy, outcome, dead-heat factor, leg count or other argument.",
            &[base, &value_error],
        )?,
        overflow: new_exception(
            py,
            "ArithmeticOverflow",
            "An exact amount that does not fit a signed 64-bit integer.",
            &[base, &overflow_error],
        )?,
        core,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Odds,
    Stake,
    Argument,
    Overflow,
}

fn kind_of(err: &CoreError) -> Kind {
    match err {
        CoreError::InvalidOdds(_) => Kind::Odds,
        CoreError::InvalidStake(_) => Kind::Stake,
        CoreError::InvalidPolicy(_) | CoreError::InvalidOutcome(_) | CoreError::TooManyLegs(_) => Kind::Argument,
        CoreError::Overflow => Kind::Overflow,
    }
}

/// Where an error happened: nothing (a scalar call), a batch item, or a leg of a batch item.
#[derive(Clone, Copy)]
enum At {
    Call,
    Item(usize),
    Leg(usize, usize),
}

impl At {
    fn prefix(self, message: String) -> String {
        match self {
            At::Call => message,
            At::Item(i) => format!("item {i}: {message}"),
            At::Leg(i, j) => format!("item {i}: leg {j}: {message}"),
        }
    }

    fn leg(self, j: usize) -> At {
        match self {
            At::Item(i) => At::Leg(i, j),
            At::Call | At::Leg(..) => At::Call,
        }
    }
}

fn raise(py: Python<'_>, kind: Kind, message: String) -> PyErr {
    let errors = ERRORS.get(py).expect("inplay._core initialised its exceptions at import");
    let ty = match kind {
        Kind::Odds => &errors.invalid_odds,
        Kind::Stake => &errors.invalid_stake,
        Kind::Argument => &errors.invalid_core_input,
        Kind::Overflow => &errors.overflow,
    };
    PyErr::from_type(ty.bind(py).clone(), message)
}

fn core_err(py: Python<'_>, err: CoreError, at: At) -> PyErr {
    raise(py, kind_of(&err), at.prefix(err.to_string()))
}

// ---------------------------------------------------------------------------------------------- inputs

/// An `int` argument as `i64`. An int out of range raises `kind` (an out-of-range price is invalid odds, not
/// an `OverflowError`); anything but an int is a `TypeError` (floats never reach the money path).
fn int_arg(obj: &Bound<'_, PyAny>, what: &str, kind: Kind, at: At) -> PyResult<i64> {
    match obj.extract::<i64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
            Err(raise(obj.py(), kind, at.prefix(format!("{what} {obj} is out of range"))))
        }
        Err(_) => {
            let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
            Err(PyTypeError::new_err(at.prefix(format!("{what} must be an int, not {type_name}"))))
        }
    }
}

/// One part of an odds fraction: a positive int up to u64 (unreduced parts may exceed i64).
fn odds_part(obj: &Bound<'_, PyAny>, what: &str, at: At) -> PyResult<u64> {
    match obj.extract::<i64>() {
        Ok(v) if v > 0 => Ok(v as u64),
        Ok(v) => Err(raise(obj.py(), Kind::Odds, at.prefix(format!("{what} {v} is not positive")))),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => obj
            .extract::<u64>()
            .map_err(|_| raise(obj.py(), Kind::Odds, at.prefix(format!("{what} {obj} is out of range")))),
        Err(_) => int_arg(obj, what, Kind::Odds, at).map(|v| v as u64),
    }
}

fn odds_arg(num: &Bound<'_, PyAny>, den: &Bound<'_, PyAny>, at: At) -> PyResult<Odds> {
    let (n, d) = (odds_part(num, "odds numerator", at)?, odds_part(den, "odds denominator", at)?);
    Odds::new(n, d).map_err(|e| core_err(num.py(), e, at))
}

fn bool_arg(obj: &Bound<'_, PyAny>, what: &str, at: At) -> PyResult<bool> {
    obj.extract::<bool>().map_err(|_| PyTypeError::new_err(at.prefix(format!("{what} must be a bool"))))
}

/// A batch item or leg: a tuple of exactly `len` fields.
fn tuple_of<'a, 'py>(obj: &'a Bound<'py, PyAny>, len: usize, what: &str, at: At) -> PyResult<&'a Bound<'py, PyTuple>> {
    match obj.cast::<PyTuple>() {
        Ok(t) if t.len() == len => Ok(t),
        _ => Err(PyTypeError::new_err(at.prefix(format!("{what} must be a tuple of {len}")))),
    }
}

/// The items of a list (or any iterable but a str/bytes).
fn items<'py>(obj: &Bound<'py, PyAny>, what: &str, at: At) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if obj.is_instance_of::<pyo3::types::PyString>() || obj.is_instance_of::<pyo3::types::PyBytes>() {
        return Err(PyTypeError::new_err(at.prefix(format!("{what} must be a list, not a str"))));
    }
    obj.try_iter().map_err(|_| PyTypeError::new_err(at.prefix(format!("{what} must be a list"))))?.collect()
}

fn stake_arg(obj: &Bound<'_, PyAny>, at: At) -> PyResult<i64> {
    int_arg(obj, "stake", Kind::Stake, at)
}

/// Legs as `(num, den)` pairs.
fn odds_legs(obj: &Bound<'_, PyAny>, at: At) -> PyResult<Vec<Odds>> {
    let legs = items(obj, "legs", at)?;
    let mut out = Vec::with_capacity(legs.len());
    for (j, leg) in legs.iter().enumerate() {
        let t = tuple_of(leg, 2, "a leg", at.leg(j))?;
        out.push(odds_arg(&t.get_item(0)?, &t.get_item(1)?, at.leg(j))?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------- odds

fn pair(o: Odds) -> (u64, u64) {
    (o.num(), o.den())
}

/// Decimal odds from a string such as "2.50" or "1.909" (at most 6 places; no sign, exponent or spaces).
#[pyfunction]
fn odds_from_decimal(py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    let text: String = text.extract().map_err(|_| PyTypeError::new_err("decimal odds must be a str"))?;
    Odds::from_decimal_str(&text).map(pair).map_err(|e| core_err(py, e, At::Call))
}

/// +150 → (5, 2); −110 → (21, 11). −99..=+99 are invalid.
#[pyfunction]
fn odds_from_american(py: Python<'_>, american: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    let a = int_arg(american, "American odds", Kind::Odds, At::Call)?;
    Odds::from_american(a).map(pair).map_err(|e| core_err(py, e, At::Call))
}

/// Fractional n/d (profit per unit staked) → decimal 1 + n/d.
#[pyfunction]
fn odds_from_fractional(py: Python<'_>, n: &Bound<'_, PyAny>, d: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    let n = int_arg(n, "fractional numerator", Kind::Odds, At::Call)?;
    let d = int_arg(d, "fractional denominator", Kind::Odds, At::Call)?;
    Odds::from_fractional(n, d).map(pair).map_err(|e| core_err(py, e, At::Call))
}

/// Validates and reduces decimal odds num/den.
#[pyfunction]
fn odds_normalize(num: &Bound<'_, PyAny>, den: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    odds_arg(num, den, At::Call).map(pair)
}

/// Exact American odds as a reduced fraction, sign on the numerator: 21/11 → (−110, 1).
#[pyfunction]
fn odds_to_american(num: &Bound<'_, PyAny>, den: &Bound<'_, PyAny>) -> PyResult<(i64, i64)> {
    Ok(odds_arg(num, den, At::Call)?.to_american())
}

/// American odds for display, rounded half away from zero.
#[pyfunction]
fn odds_american_display(num: &Bound<'_, PyAny>, den: &Bound<'_, PyAny>) -> PyResult<i64> {
    Ok(odds_arg(num, den, At::Call)?.american_display())
}

/// Fractional odds (decimal − 1), reduced.
#[pyfunction]
fn odds_to_fractional(num: &Bound<'_, PyAny>, den: &Bound<'_, PyAny>) -> PyResult<(u64, u64)> {
    Ok(odds_arg(num, den, At::Call)?.to_fractional())
}

/// Decimal odds for display with `places` (0..=18) digits, rounded half up. Never used for money.
#[pyfunction]
#[pyo3(signature = (num, den, places = None))]
fn odds_decimal_display(
    py: Python<'_>,
    num: &Bound<'_, PyAny>,
    den: &Bound<'_, PyAny>,
    places: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let odds = odds_arg(num, den, At::Call)?;
    let places = match places {
        None => 2,
        Some(p) => int_arg(p, "places", Kind::Argument, At::Call)?,
    };
    let max = inplay_core::odds::MAX_DISPLAY_PLACES as i64;
    if !(0..=max).contains(&places) {
        return Err(raise(py, Kind::Argument, format!("places {places} not in 0..={max}")));
    }
    Ok(odds.decimal_display(places as u32))
}

/// floor(1e6 · den / num).
#[pyfunction]
fn implied_probability_ppm(num: &Bound<'_, PyAny>, den: &Bound<'_, PyAny>) -> PyResult<u64> {
    Ok(odds_arg(num, den, At::Call)?.implied_probability_ppm())
}

// ---------------------------------------------------------------------------------------------- batches

/// Most basis points a tolerance may name (100×).
const MAX_TOLERANCE_BP: i64 = 1_000_000;

/// Each quote (suspended, age_ms, max_age_ms, seen_num, seen_den, cur_num, cur_den, policy, tolerance_bp)
/// → 0 ACCEPTED, 1 SUSPENDED, 2 STALE, 3 ODDS_CHANGED.
#[pyfunction]
fn check_quotes(py: Python<'_>, quotes: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    let rows = items(quotes, "quotes", At::Call)?;
    let mut inputs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let at = At::Item(i);
        let t = tuple_of(row, 9, "a quote", at)?;
        let f = |k: usize| t.get_item(k);
        let policy = int_arg(&f(7)?, "policy", Kind::Argument, at)?;
        let tolerance = int_arg(&f(8)?, "tolerance_bp", Kind::Argument, at)?;
        if !(0..=MAX_TOLERANCE_BP).contains(&tolerance) {
            return Err(raise(
                py,
                Kind::Argument,
                at.prefix(format!("tolerance_bp {tolerance} not in 0..={MAX_TOLERANCE_BP}")),
            ));
        }
        inputs.push(QuoteInput {
            suspended: bool_arg(&f(0)?, "suspended", at)?,
            age_ms: int_arg(&f(1)?, "age_ms", Kind::Argument, at)?,
            max_age_ms: int_arg(&f(2)?, "max_age_ms", Kind::Argument, at)?,
            seen: odds_arg(&f(3)?, &f(4)?, at)?,
            current: odds_arg(&f(5)?, &f(6)?, at)?,
            policy: Policy::from_code(policy).map_err(|e| core_err(py, e, at))?,
            tolerance_bp: tolerance as u32,
        });
    }
    // u32, not u8: PyO3 turns a Vec<u8> into bytes.
    Ok(py.detach(move || inputs.iter().map(|q| check_quote(q) as u32).collect()))
}

/// floor(stake · Π odds) for one bet.
#[pyfunction]
fn potential_return(py: Python<'_>, stake: &Bound<'_, PyAny>, legs: &Bound<'_, PyAny>) -> PyResult<i64> {
    let stake = stake_arg(stake, At::Call)?;
    let legs = odds_legs(legs, At::Call)?;
    core_potential_return(stake, &legs).map_err(|e| core_err(py, e, At::Call))
}

/// Runs `f` over the inputs with the GIL released; the first error names its item.
fn compute<T: Send, R: Send>(
    py: Python<'_>,
    inputs: Vec<T>,
    f: impl Fn(&T) -> Result<R, CoreError> + Send + Sync,
) -> PyResult<Vec<R>> {
    let results: Result<Vec<R>, (usize, CoreError)> =
        py.detach(move || inputs.iter().enumerate().map(|(i, x)| f(x).map_err(|e| (i, e))).collect());
    results.map_err(|(i, e)| core_err(py, e, At::Item(i)))
}

/// floor(stake · Π odds) for each (stake, [(num, den), …]).
#[pyfunction]
fn potential_returns(py: Python<'_>, bets: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    let rows = items(bets, "bets", At::Call)?;
    let mut inputs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let t = tuple_of(row, 2, "a bet", At::Item(i))?;
        inputs.push((stake_arg(&t.get_item(0)?, At::Item(i))?, odds_legs(&t.get_item(1)?, At::Item(i))?));
    }
    compute(py, inputs, |(stake, legs)| core_potential_return(*stake, legs))
}

/// Each bet (stake, [(odds_num, odds_den, outcome_code, dh_num, dh_den), …]) → (status_code, return_minor).
#[pyfunction]
fn settle_bets(py: Python<'_>, bets: &Bound<'_, PyAny>) -> PyResult<Vec<(u8, i64)>> {
    let rows = items(bets, "bets", At::Call)?;
    let mut inputs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let t = tuple_of(row, 2, "a bet", At::Item(i))?;
        let stake = stake_arg(&t.get_item(0)?, At::Item(i))?;
        let legs = items(&t.get_item(1)?, "legs", At::Item(i))?;
        let mut settle_legs = Vec::with_capacity(legs.len());
        for (j, leg) in legs.iter().enumerate() {
            let at = At::Leg(i, j);
            let l = tuple_of(leg, 5, "a leg", at)?;
            let odds = odds_arg(&l.get_item(0)?, &l.get_item(1)?, at)?;
            let code = int_arg(&l.get_item(2)?, "outcome", Kind::Argument, at)?;
            let outcome = if code == 7 {
                let dh_num = int_arg(&l.get_item(3)?, "dead-heat numerator", Kind::Argument, at)?;
                let dh_den = int_arg(&l.get_item(4)?, "dead-heat denominator", Kind::Argument, at)?;
                LegOutcome::dead_heat(dh_num, dh_den)
            } else {
                LegOutcome::from_code(code, 1, 1)
            };
            settle_legs.push(SettleLeg { odds, outcome: outcome.map_err(|e| core_err(py, e, at))? });
        }
        inputs.push((stake, settle_legs));
    }
    compute(py, inputs, |(stake, legs)| settle_bet(*stake, legs).map(|(s, v)| (s as u8, v)))
}

// ---------------------------------------------------------------------------------------------- feed

/// The odds feed's price-jump band (`inplay_core::band`): one object per feed pipeline, called once per
/// price update (`check`) and once per chunk (`commit`). Plain owned data, so Send and Sync: a pipeline built
/// on one thread may be dropped on another (an embedded server's loop thread); PyO3's borrow flag refuses two
/// calls at once.
#[pyclass(name = "JumpBand", module = "inplay._core")]
struct PyJumpBand {
    inner: CoreJumpBand,
}

/// A price `(selection, num, den)`, read with borrowed items (this runs per price update).
fn price_of<'py>(row: &Bound<'py, PyAny>, i: usize) -> PyResult<(Bound<'py, PyString>, u64, u64)> {
    let t = tuple_of(row, 3, "a price (selection, num, den)", At::Item(i))?;
    let key = t
        .get_borrowed_item(0)?
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(At::Item(i).prefix("selection must be a str".into())))?
        .to_owned();
    let part = |j: usize, what: &str| -> PyResult<u64> {
        let item = t.get_borrowed_item(j)?;
        match item.extract::<u64>() {
            Ok(v) if v > 0 => Ok(v),
            _ => odds_part(&item.to_owned(), what, At::Item(i)),
        }
    };
    Ok((key, part(1, "odds numerator")?, part(2, "odds denominator")?))
}

#[pymethods]
impl PyJumpBand {
    #[new]
    fn new(
        py: Python<'_>,
        band_bp: &Bound<'_, PyAny>,
        window_ms: &Bound<'_, PyAny>,
        max_history: usize,
    ) -> PyResult<Self> {
        let band = int_arg(band_bp, "band_bp", Kind::Argument, At::Call)?;
        let window = int_arg(window_ms, "window_ms", Kind::Argument, At::Call)?;
        if band < 0 || window < 0 {
            return Err(raise(py, Kind::Argument, "band_bp and window_ms must not be negative".into()));
        }
        Ok(PyJumpBand { inner: CoreJumpBand::new(band as u64, window, max_history) })
    }

    /// `(jumped, token)` for an update of `market` at provider time `ts_ms` with `prices`, a list of
    /// `(selection, num, den)`; the token commits it (:meth:`commit`) within the same chunk.
    fn check(&mut self, market: &str, ts_ms: i64, prices: &Bound<'_, PyAny>) -> PyResult<(bool, usize)> {
        let rows = match prices.cast::<PyList>() {
            Ok(list) => list.iter().collect::<Vec<_>>(),
            Err(_) => items(prices, "prices", At::Call)?,
        };
        let owned = rows.iter().enumerate().map(|(i, row)| price_of(row, i)).collect::<PyResult<Vec<_>>>()?;
        let mut parsed = Vec::with_capacity(owned.len());
        for (key, num, den) in &owned {
            parsed.push((key.to_str()?, *num, *den));
        }
        Ok(self.inner.check(market, ts_ms, &parsed))
    }

    /// Commits the chunk's updates of `tokens` in that order (an unknown token: nothing is committed).
    fn commit(&mut self, py: Python<'_>, tokens: Vec<usize>) -> PyResult<()> {
        self.inner
            .commit(&tokens)
            .map_err(|bad| raise(py, Kind::Argument, format!("token {bad} is not of the current chunk")))
    }

    fn forget(&mut self, market: &str) {
        self.inner.forget(market);
    }

    fn clear_pending(&mut self) {
        self.inner.clear_pending();
    }

    #[getter]
    fn markets(&self) -> usize {
        self.inner.markets()
    }
}

/// Per payload: the alpha price message `(seq, ts_ms, correction, event_ref, market_ref, [(selection, num,
/// den), ...])`, or None where the fast reader declines it (`inplay_core::feed`: the Python adapter reads
/// those). One call per chunk.
#[pyfunction]
fn read_alpha_prices<'py>(py: Python<'py>, payloads: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let rows = items(payloads, "payloads", At::Call)?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let bytes = row
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err(At::Item(i).prefix("a payload must be bytes".into())))?;
        match inplay_core::feed::read_alpha_prices(bytes.as_bytes()) {
            None => out.push(py.None().into_bound(py)),
            Some(m) => {
                let prices: Vec<(&str, u64, u64)> = m.prices.iter().map(|(s, o)| (*s, o.num(), o.den())).collect();
                let item = (m.seq, m.ts_ms, m.correction, m.event_ref, m.market_ref, prices).into_pyobject(py)?;
                out.push(item.into_any());
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------ price items and odds records (JSON encoders)
//
// Both read the record objects' attributes directly (~300 instructions a `getattr`, measured with
// callgrind): building tuples in Python for them cost more (a comprehension frame per nested list in 3.11).

fn text(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<PyBackedStr> {
    obj.getattr(name)?.extract()
}

fn int(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> PyResult<i64> {
    obj.getattr(name)?.extract()
}

/// A selection's (id, decimal odds num, den); `obj.odds` read once.
fn selection_odds(py: Python<'_>, s: &Bound<'_, PyAny>) -> PyResult<(PyBackedStr, u64, u64)> {
    let odds = s.getattr(intern!(py, "odds"))?;
    Ok((
        text(s, intern!(py, "selection_id"))?,
        odds.getattr(intern!(py, "num"))?.extract()?,
        odds.getattr(intern!(py, "den"))?.extract()?,
    ))
}

/// `read` over each of `obj.selections` (`SelectionPrice`).
fn selections<T>(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    read: impl Fn(&Bound<'_, PyAny>) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    let mut out = Vec::with_capacity(4); // a market's usual count: no regrowth (collect starts at 0)
    for s in obj.getattr(intern!(py, "selections"))?.try_iter()? {
        out.push(read(&s?)?);
    }
    Ok(out)
}

/// Runs `hold` over `rows`; None as soon as one raises `OverflowError` (a number beyond 64 bits: the
/// caller's Python reference encodes the batch).
fn hold_all<'py, H>(
    py: Python<'py>,
    rows: &[Bound<'py, PyAny>],
    hold: impl Fn(&Bound<'py, PyAny>, usize) -> PyResult<H>,
) -> PyResult<Option<Vec<H>>> {
    let mut held = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match hold(row, i) {
            Ok(h) => held.push(h),
            Err(e) if e.is_instance_of::<PyOverflowError>(py) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(held))
}

/// A `PriceWrite` as the core's item; `PyBackedStr` keeps each text alive (and readable as `&str`) while the
/// batch is encoded with the GIL released.
fn price_item(py: Python<'_>, w: &Bound<'_, PyAny>, held_version: i64) -> PyResult<PriceItem<PyBackedStr>> {
    let t = |name: &Bound<'_, PyString>| text(w, name);
    let n = |name: &Bound<'_, PyString>| int(w, name);
    let selection = |s: &Bound<'_, PyAny>| {
        let (id, num, den) = selection_odds(py, s)?;
        Ok(Selection { id, name: text(s, intern!(py, "name"))?, num, den })
    };
    Ok(PriceItem {
        market_id: t(intern!(py, "market_id"))?,
        event_id: t(intern!(py, "event_id"))?,
        sport: t(intern!(py, "sport"))?,
        market_type: t(intern!(py, "market_type"))?,
        name: t(intern!(py, "name"))?,
        in_play: w.getattr(intern!(py, "in_play"))?.is_truthy()?,
        selections: selections(py, w, selection)?,
        source_ts_ms: n(intern!(py, "source_ts_ms"))?,
        updated_at_ms: n(intern!(py, "updated_at_ms"))?,
        source: t(intern!(py, "source"))?,
        suspend_reason: t(intern!(py, "suspend_reason"))?,
        correction: w.getattr(intern!(py, "correction"))?.is_truthy()?,
        provider_ts_ms: n(intern!(py, "provider_ts_ms"))?,
        route_primary: t(intern!(py, "route_primary"))?,
        held_version,
    })
}

/// The price script's items (`inplay_core::price_items`) of a batch of `PriceWrite`s, with the held version
/// per write; None when a number does not fit 64 bits. One call per batch.
#[pyfunction]
fn encode_price_items(py: Python<'_>, writes: &Bound<'_, PyAny>, held_versions: Vec<i64>) -> PyResult<Option<String>> {
    let rows = items(writes, "writes", At::Call)?;
    if rows.len() != held_versions.len() {
        return Err(PyValueError::new_err("writes and held_versions differ in length"));
    }
    let Some(held) = hold_all(py, &rows, |w, i| price_item(py, w, held_versions[i]))? else { return Ok(None) };
    Ok(Some(py.detach(|| core_encode_price_items(&held))))
}

fn change(py: Python<'_>, c: &Bound<'_, PyAny>) -> PyResult<Change<PyBackedStr>> {
    Ok(Change {
        market_id: text(c, intern!(py, "market_id"))?,
        selection_id: text(c, intern!(py, "selection_id"))?,
        kind: text(c, intern!(py, "kind"))?,
        old_value: text(c, intern!(py, "old_value"))?,
        new_value: text(c, intern!(py, "new_value"))?,
        source: text(c, intern!(py, "source"))?,
        reason: text(c, intern!(py, "reason"))?,
        version: int(c, intern!(py, "version"))?,
        at_ms: int(c, intern!(py, "at_ms"))?,
    })
}

/// A `MarketState` (with its status name and its `MarketChange` entries) as the core's record.
fn odds_record(
    py: Python<'_>,
    st: &Bound<'_, PyAny>,
    status: PyBackedStr,
    changes: &Bound<'_, PyAny>,
) -> PyResult<OddsRecord<PyBackedStr>> {
    Ok(OddsRecord {
        market_id: text(st, intern!(py, "market_id"))?,
        event_id: text(st, intern!(py, "event_id"))?,
        sport: text(st, intern!(py, "sport"))?,
        market_type: text(st, intern!(py, "market_type"))?,
        status,
        status_reason: text(st, intern!(py, "status_reason"))?,
        version: int(st, intern!(py, "version"))?,
        selections: selections(py, st, |s| selection_odds(py, s))?,
        updated_at_ms: int(st, intern!(py, "updated_at_ms"))?,
        source: text(st, intern!(py, "source"))?,
        changes: changes.try_iter()?.map(|c| change(py, &c?)).collect::<PyResult<Vec<_>>>()?,
    })
}

/// The `inplay.odds.v1` record of each applied `MarketState` (with its status name and its change entries),
/// as bytes (`inplay_core::odds_record`); None when a number does not fit 64 bits. One call per batch.
#[pyfunction]
fn encode_odds_records<'py>(
    py: Python<'py>,
    states: &Bound<'py, PyAny>,
    statuses: Vec<PyBackedStr>,
    changes: &Bound<'py, PyAny>,
) -> PyResult<Option<Vec<Bound<'py, PyBytes>>>> {
    let rows = items(states, "states", At::Call)?;
    let groups = items(changes, "changes", At::Call)?;
    if rows.len() != statuses.len() || rows.len() != groups.len() {
        return Err(PyValueError::new_err("states, statuses and changes differ in length"));
    }
    let Some(held) = hold_all(py, &rows, |st, i| odds_record(py, st, statuses[i].clone_ref(py), &groups[i]))? else {
        return Ok(None);
    };
    let texts: Vec<String> = py.detach(|| {
        held.iter()
            .map(|r| {
                let mut out = String::with_capacity(512);
                encode_odds_record(&mut out, r);
                out
            })
            .collect()
    });
    Ok(Some(texts.iter().map(|t| PyBytes::new(py, t.as_bytes())).collect()))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let errors = ERRORS.get_or_try_init(py, || make_errors(py))?;
    m.add("CoreError", errors.core.bind(py))?;
    m.add("InvalidOdds", errors.invalid_odds.bind(py))?;
    m.add("InvalidStake", errors.invalid_stake.bind(py))?;
    m.add("InvalidCoreInput", errors.invalid_core_input.bind(py))?;
    m.add("ArithmeticOverflow", errors.overflow.bind(py))?;
    m.add("MAX_LEGS", inplay_core::MAX_LEGS)?;
    m.add_function(wrap_pyfunction!(odds_from_decimal, m)?)?;
    m.add_function(wrap_pyfunction!(odds_from_american, m)?)?;
    m.add_function(wrap_pyfunction!(odds_from_fractional, m)?)?;
    m.add_function(wrap_pyfunction!(odds_normalize, m)?)?;
    m.add_function(wrap_pyfunction!(odds_to_american, m)?)?;
    m.add_function(wrap_pyfunction!(odds_american_display, m)?)?;
    m.add_function(wrap_pyfunction!(odds_to_fractional, m)?)?;
    m.add_function(wrap_pyfunction!(odds_decimal_display, m)?)?;
    m.add_function(wrap_pyfunction!(implied_probability_ppm, m)?)?;
    m.add_function(wrap_pyfunction!(check_quotes, m)?)?;
    m.add_function(wrap_pyfunction!(potential_return, m)?)?;
    m.add_function(wrap_pyfunction!(potential_returns, m)?)?;
    m.add_function(wrap_pyfunction!(settle_bets, m)?)?;
    m.add_class::<PyJumpBand>()?;
    m.add_function(wrap_pyfunction!(read_alpha_prices, m)?)?;
    m.add_function(wrap_pyfunction!(encode_price_items, m)?)?;
    m.add_function(wrap_pyfunction!(encode_odds_records, m)?)?;
    Ok(())
}
