//! Thin PyO3 bindings of `inplay-core` as `inplay._core`. Inputs are converted to Rust values while
//! holding the GIL; batch computation then runs with the GIL released; results go back as Python lists.

use inplay_core::{
    check_quote, potential_return as core_potential_return, settle_bet, CoreError, LegOutcome, Odds, Policy,
    QuoteInput, SettleLeg,
};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(_core, CoreErrorPy, PyValueError, "Base of every error raised by the Rust core.");
create_exception!(_core, InvalidOdds, CoreErrorPy, "Odds outside (1, 10000] or malformed.");
create_exception!(_core, InvalidStake, CoreErrorPy, "A stake that is not a positive integer amount.");
create_exception!(_core, InvalidArgument, CoreErrorPy, "Bad policy, outcome or leg count.");
create_exception!(_core, ArithmeticOverflow, CoreErrorPy, "A product that does not fit the integer range.");

fn to_py(err: CoreError, index: Option<usize>) -> PyErr {
    let message = match index {
        Some(i) => format!("item {i}: {err}"),
        None => err.to_string(),
    };
    match err {
        CoreError::InvalidOdds(_) => InvalidOdds::new_err(message),
        CoreError::InvalidStake(_) => InvalidStake::new_err(message),
        CoreError::InvalidPolicy(_) | CoreError::InvalidOutcome(_) | CoreError::TooManyLegs(_) => {
            InvalidArgument::new_err(message)
        }
        CoreError::Overflow => ArithmeticOverflow::new_err(message),
    }
}

fn odds(num: i64, den: i64, index: Option<usize>) -> PyResult<Odds> {
    Odds::from_i64(num, den).map_err(|e| to_py(e, index))
}

fn pair(o: Odds) -> (u64, u64) {
    (o.num(), o.den())
}

#[pyfunction]
fn odds_from_decimal(text: &str) -> PyResult<(u64, u64)> {
    Odds::from_decimal_str(text).map(pair).map_err(|e| to_py(e, None))
}

#[pyfunction]
fn odds_from_american(american: i64) -> PyResult<(u64, u64)> {
    Odds::from_american(american).map(pair).map_err(|e| to_py(e, None))
}

#[pyfunction]
fn odds_from_fractional(n: i64, d: i64) -> PyResult<(u64, u64)> {
    Odds::from_fractional(n, d).map(pair).map_err(|e| to_py(e, None))
}

#[pyfunction]
fn odds_normalize(num: i64, den: i64) -> PyResult<(u64, u64)> {
    odds(num, den, None).map(pair)
}

#[pyfunction]
fn odds_to_american(num: i64, den: i64) -> PyResult<(i64, i64)> {
    Ok(odds(num, den, None)?.to_american())
}

#[pyfunction]
fn odds_american_display(num: i64, den: i64) -> PyResult<i64> {
    Ok(odds(num, den, None)?.american_display())
}

#[pyfunction]
fn odds_to_fractional(num: i64, den: i64) -> PyResult<(u64, u64)> {
    Ok(odds(num, den, None)?.to_fractional())
}

#[pyfunction]
#[pyo3(signature = (num, den, places = 2))]
fn odds_decimal_display(num: i64, den: i64, places: u32) -> PyResult<String> {
    if places > 6 {
        return Err(PyValueError::new_err("places must be 0..=6"));
    }
    Ok(odds(num, den, None)?.decimal_display(places))
}

#[pyfunction]
fn implied_probability_ppm(num: i64, den: i64) -> PyResult<u64> {
    Ok(odds(num, den, None)?.implied_probability_ppm())
}

type QuoteTuple = (bool, i64, i64, i64, i64, i64, i64, i64, i64);

/// Each quote (suspended, age_ms, max_age_ms, seen_num, seen_den, cur_num, cur_den, policy, tolerance_bp)
/// → 0 ACCEPTED, 1 SUSPENDED, 2 STALE, 3 ODDS_CHANGED.
#[pyfunction]
fn check_quotes(py: Python<'_>, quotes: Vec<QuoteTuple>) -> PyResult<Vec<u8>> {
    let mut inputs = Vec::with_capacity(quotes.len());
    for (i, (suspended, age_ms, max_age_ms, sn, sd, cn, cd, policy, tol)) in quotes.into_iter().enumerate() {
        if !(0..=1_000_000).contains(&tol) {
            return Err(InvalidArgument::new_err(format!("item {i}: tolerance_bp {tol} out of range")));
        }
        inputs.push(QuoteInput {
            suspended,
            age_ms,
            max_age_ms,
            seen: odds(sn, sd, Some(i))?,
            current: odds(cn, cd, Some(i))?,
            policy: Policy::from_code(policy).map_err(|e| to_py(e, Some(i)))?,
            tolerance_bp: tol as u32,
        });
    }
    Ok(py.allow_threads(move || inputs.iter().map(|q| check_quote(q) as u8).collect()))
}

fn legs_of(legs: Vec<(i64, i64)>, index: Option<usize>) -> PyResult<Vec<Odds>> {
    legs.into_iter().map(|(n, d)| odds(n, d, index)).collect()
}

#[pyfunction]
fn potential_return(stake: i64, legs: Vec<(i64, i64)>) -> PyResult<i64> {
    let legs = legs_of(legs, None)?;
    core_potential_return(stake, &legs).map_err(|e| to_py(e, None))
}

#[pyfunction]
fn potential_returns(py: Python<'_>, bets: Vec<(i64, Vec<(i64, i64)>)>) -> PyResult<Vec<i64>> {
    let mut inputs = Vec::with_capacity(bets.len());
    for (i, (stake, legs)) in bets.into_iter().enumerate() {
        inputs.push((stake, legs_of(legs, Some(i))?));
    }
    let results: Vec<Result<i64, (usize, CoreError)>> = py.allow_threads(move || {
        inputs
            .iter()
            .enumerate()
            .map(|(i, (stake, legs))| core_potential_return(*stake, legs).map_err(|e| (i, e)))
            .collect()
    });
    results.into_iter().map(|r| r.map_err(|(i, e)| to_py(e, Some(i)))).collect()
}

type LegTuple = (i64, i64, i64, i64, i64);

/// Each bet (stake, [(odds_num, odds_den, outcome_code, dh_num, dh_den)]) → (status_code, return_minor).
#[pyfunction]
fn settle_bets(py: Python<'_>, bets: Vec<(i64, Vec<LegTuple>)>) -> PyResult<Vec<(u8, i64)>> {
    let mut inputs = Vec::with_capacity(bets.len());
    for (i, (stake, legs)) in bets.into_iter().enumerate() {
        let mut settle_legs = Vec::with_capacity(legs.len());
        for (n, d, code, dh_n, dh_d) in legs {
            settle_legs.push(SettleLeg {
                odds: odds(n, d, Some(i))?,
                outcome: LegOutcome::from_code(code, dh_n, dh_d).map_err(|e| to_py(e, Some(i)))?,
            });
        }
        inputs.push((stake, settle_legs));
    }
    let results: Vec<Result<(u8, i64), (usize, CoreError)>> = py.allow_threads(move || {
        inputs
            .iter()
            .enumerate()
            .map(|(i, (stake, legs))| settle_bet(*stake, legs).map(|(s, v)| (s as u8, v)).map_err(|e| (i, e)))
            .collect()
    });
    results.into_iter().map(|r| r.map_err(|(i, e)| to_py(e, Some(i)))).collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("CoreError", py.get_type::<CoreErrorPy>())?;
    m.add("InvalidOdds", py.get_type::<InvalidOdds>())?;
    m.add("InvalidStake", py.get_type::<InvalidStake>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("ArithmeticOverflow", py.get_type::<ArithmeticOverflow>())?;
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
    Ok(())
}
