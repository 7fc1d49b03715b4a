"""Scaling-law fits over a sweep's `results.jsonl`: power laws, Chinchilla L(N, D), IsoFLOP.

`scaling fit --results PATH` reads one row per training run (as written by `scaling sweep
collect`), fits

  * per-group power laws L = a X^-b (+ E when there are enough points): loss against N at
    equal training tokens, and against D at equal N;
  * the parametric law L(N, D) = E + A / N^alpha + B / D^beta of Hoffmann et al. 2022
    (approach 3): Huber loss of log-space residuals, L-BFGS from a grid of starts, bootstrap
    confidence intervals;
  * IsoFLOP profiles (approach 2): per compute budget a parabola of loss in log N, its
    minimum N_opt, then N_opt ~ C^a and D_opt ~ C^b;

predicts the compute-optimal N, D and loss at target budgets, writes `fit.json` (every
number) and PNG plots. A fit the data cannot support is skipped with a note; a fit asked for
explicitly (`--fits chinchilla`) that cannot be done is an error, and so is having no fit.

N is the non-embedding parameter count by default (`--params total` for all parameters).

One module per role, each importing only the ones above it in this list:

  load.py         results.jsonl -> rows; METRICS, PARAM_COLUMNS (the N convention), FitError
  anchors.py      the published results (Hoffmann, Besiroglu, Porian, DeepSeek, Kaplan): numbers, citations
  provenance.py   fit.json's inputs record (digests, options) and provenance (commit, versions)
  laws.py         the law forms and their point fits: power laws, the parametric L(N, D) (objective,
                  L-BFGS from a grid, optimum), IsoFLOP budgets and parabolas
  bootstrap.py    row-resampling intervals of the parametric law and of the IsoFLOP fit
  approaches.py   Chinchilla approach 3 (fit_chinchilla) and approach 2 (fit_isoflop), with intervals
  held_out.py     the refit without the largest budget (held_out_check), scored against naive baselines
  profiles.py     per-budget profile checks (misfit vs a noise floor, one-run minima, model shape) and
                  approach 2 without the flagged budgets (check_profiles)
  diagnostics.py  parameters at bounds, unconstrained intervals, exact fits, the design, approach 2 vs 3;
                  diagnose gathers fit.json's warnings
  predictions.py  compute-optimal N, D, loss at target budgets (predict)
  plots.py        the PNGs
  command.py      `scaling fit`: add_fit_args, run_fit, fit_all (fit.json), the printed summary

Fits that know what they know: besides the numbers, fit.json says what the data cannot tell.
Its diagnostic fields (all intervals are 5-95% bootstrap percentiles):

  warnings                  list of sentences, the first thing `scaling fit` prints and the
                            report shows; empty when nothing is flagged.
  design                    the design before any fit (isoflop_design): grouping, budgets[]
                            {flops, rows, sizes (distinct N), N_range, interior (lowest observed
                            loss strictly inside the sizes)}, budgets_with_3_sizes,
                            budgets_not_interior [flops], flags ⊆ {one_N_per_budget,
                            no_budget_with_3_sizes, fewer_than_2_budgets}.
  chinchilla.parameters     per E, A, B, alpha, beta, a_exponent, b_exponent: {value, ci, span
                            (hi/lo), bound, at_bound ('lower'|'upper'|None), constrained (False:
                            E/A/B interval spans > 10x or reaches <= 0, alpha/beta interval
                            reaches <= 0, a/b interval leaves (0, 1); None: no bootstrap)}.
                            E is at its lower bound when E < E_FLOOR * min L, alpha/beta when
                            below EXPONENT_RANGE[0] or above EXPONENT_RANGE[1].
  chinchilla.identified     False when any parameter is at a bound or unconstrained.
  chinchilla.exact, .dof    exact: as many points as parameters (5); then r2_log is None.
  power_law ... .exact      the same for each per-group power law (r2_log None when exact).
  isoflop.budgets[]         + sizes, interior, exact (3 sizes: the parabola has no residual), rmse.
  isoflop.ci {a, b}         see intervals below; isoflop.bootstrap holds samples (a, kN, b, kD, L_E,
                            L_a, L_b), succeeded and escaped.
  isoflop.N_opt_vs_C.exact  True when the line runs through 2 budgets.
  chinchilla.a_at_data      {a, ci, flops}: the N_opt ~ C^a that the parametric law implies over
                            the IsoFLOP budgets with D = C / (the rows' FLOPs per token), which
                            for small models is not C / 6N (LM head, attention), so it can differ
                            from a_exponent = beta / (alpha + beta) (implied_exponent).
  exponent_agreement        a test on a2 - a3 on the SAME row resamples (agreement.py): {a_approach2,
                            a_approach3 (a_at_data when present), approach3_form, difference,
                            ci_approach2 / ci_approach3 / ci_difference (5-95% over those resamples),
                            mc_error_difference, states, resamples_without_a, ci_approach2_headline,
                            verdict ('consistent' | 'differ' | 'not identified' | 'degenerate' |
                            'not decidable'), agree (True / False only for consistent / differ)}.
  intervals (every one)     every resample counts (intervals.py): one without a finite estimate sits at
                            +-inf on the side it escaped to (unknown side: both ends), so a ci end is
                            null (open) when more than 5% escape that way; a state of 'identified'
                            (width <= INFORMATIVE_WIDTH = 0.2 in a), 'not identified', 'open',
                            'unconstrained' or 'degenerate' (no width: never constrained); mc_error
                            [lo, hi]: the Monte-Carlo standard error of each end (order statistics).
  isoflop.ci, .ci_scheme    the seed-noise scheme's 5-95% (.ci_state); isoflop.mc {target (--mc_error),
                            draws, max_draws, met, seed}: draws double until each finite end's MC error
                            is below target. isoflop.resampling {seed_noise (sigma, sigma_dof,
                            sigma_source), residual, row: {draws, a, b (interval records), failures
                            {draws_without_estimate, escaped {low, high, unknown_side}, budget_failures
                            per reason}, mc}, jackknife {leave_outs, failed, range, se, values}}.
                            isoflop.bootstrap: the first --bootstrap draws of the seed-noise scheme
                            (finite samples, escaped counts) for the predictions and plots.
  isoflop.specification_curve  {headline, specs[] {name convention/estimator/transform/budgets, a, b,
                            ci_a, ci_b, side}} (spec.py): 3 N conventions (total, non_embedding, M =
                            C / D - 6 V d) x parabola / local3 / best x loss / log_loss x all / drop_top /
                            drop_bottom budgets, on the headline's seed-noise draws.
  headline                  {main, specifications, skipped [{convention|spec, reason}], a and b: {value,
                            statistical (the main spec's seed-noise interval), systematic [min, max] over
                            specifications, combined {ci, tau, method 'shrunk_offsets', alternatives}},
                            published [{anchor, method, a_published, convention, spec, ci_difference,
                            verdict}]} or {skipped}.
  chinchilla.bootstrap      + failed {reason: count}, draws (resample index of each sample), strata
                            (the budgets resampled within), mc_error; chinchilla.ci_state.
  held_out                  refit without the largest budget (held_out_check): held_out_flops,
                            held_out_runs, train_max_flops, observed {kind ('parabola vertex' |
                            'best row'), bracketed, N_opt, L_opt, sizes}, approach2/approach3
                            (approach 3 at the rows' FLOPs per token, as the observed minimum)
                            {N_opt, loss, loss_error = predicted/observed - 1, N_opt_ratio =
                            predicted/observed (None when the held-out budget does not bracket
                            its minimum)} or {skipped}; or {skipped: reason}.
  held_out.baselines        naive predictions of the held-out minimum, each {N_opt, loss, N_opt_ratio,
                            N_opt_error = |ln ratio|, loss_error, loss_abs_error, rule}: d20 (D = 20 N:
                            N_opt = sqrt(C / 120); loss None), last_two (log-log line through the last two
                            training budgets' minima; from_flops, from_kind), grid_centre (sqrt(min N * max N)
                            of the held-out sizes; loss of the runs at the size nearest it, loss_at_N).
  held_out.skill            per approach: N_opt and loss {error, best_baseline, best_baseline_error,
                            baseline_errors, skill = error / best_baseline_error (None when a baseline is
                            exactly right, with why), passes (skill < 1 - SKILL_TIE), within_goal (1.5x /
                            2%)}, passes (every measurable quantity passes; None: none measurable),
                            within_goals; or {skipped}.
  profiles                  per-budget checks (check_profiles): k (misfit limit, x the floor), noise_floor
                            {value, source ('given' | 'seed replicates' | 'pooled parabola residuals'),
                            detail, dof}, budgets[] {flops, runs, sizes, rmse, resid_sd, dof, floor,
                            floor_source, checked (False: < 3 sizes), misfit_ratio, misfit,
                            leave_one_out {tested, max_shift_log10, max_shift_run, destroyed_by [{run, N,
                            why}] | why}, shape {known, constant, num_layers, head_dim, per_size}, flagged,
                            reasons {misfit | one_run | not_bracketed | shape: sentence}}, flagged [flops],
                            without_flagged and without_profile_flags (shape changes kept): approach 2
                            refitted without those budgets {left_out, a, b, ci, budgets_used, exact,
                            flops_range} | {left_out, skipped} | {left_out: [], same_as_headline}.
  inputs                    results (base name only), results_sha256, metric, params_column, rows_used,
                            runs (run hashes), row_sha256 (per row: sha256 of its canonical JSON), range,
                            options (every analysis option), rng_seed, row_filter.
  provenance                code_commit (git HEAD of the package's own checkout, else None), code_dirty,
                            package_version, python, numpy, scipy. Same inputs: byte-identical fit.json.
  predictions[]             {flops, extrapolation = flops / largest sampled C, chinchilla and
                            isoflop: {N_opt, D_opt, loss, ci {N_opt, D_opt, loss}, N_opt_span,
                            constrained (False: N_opt interval spans > 10x, printed as
                            'unconstrained' instead of a number; None: no interval)}}; the
                            parametric optimum there is closed-form under C = 6 N D (large
                            models, where the head's FLOPs are a small part).
"""
