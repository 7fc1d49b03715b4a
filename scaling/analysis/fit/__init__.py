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
  laws.py         the law forms and their point fits: power laws, the parametric L(N, D) (objective,
                  L-BFGS from a grid, optimum), IsoFLOP budgets and parabolas
  bootstrap.py    row-resampling intervals of the parametric law and of the IsoFLOP fit
  approaches.py   Chinchilla approach 3 (fit_chinchilla) and approach 2 (fit_isoflop), with intervals
  held_out.py     the refit without the largest budget (held_out_check)
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
  isoflop.ci {a, b}         bootstrap (rows resampled within each budget); isoflop.bootstrap
                            holds the samples (a, kN, b, kD, L_E, L_a, L_b) and succeeded.
  isoflop.N_opt_vs_C.exact  True when the line runs through 2 budgets.
  chinchilla.a_at_data      {a, ci, flops}: the N_opt ~ C^a that the parametric law implies over
                            the IsoFLOP budgets with D = C / (the rows' FLOPs per token), which
                            for small models is not C / 6N (LM head, attention), so it can differ
                            from a_exponent = beta / (alpha + beta) (implied_exponent).
  exponent_agreement        {a_approach2, ci_approach2, a_approach3 (a_at_data when present),
                            ci_approach3, approach3_form, difference, agree: False when the
                            intervals do not overlap, None without both}.
  held_out                  refit without the largest budget (held_out_check): held_out_flops,
                            held_out_runs, train_max_flops, observed {kind ('parabola vertex' |
                            'best row'), bracketed, N_opt, L_opt, sizes}, approach2/approach3
                            (approach 3 at the rows' FLOPs per token, as the observed minimum)
                            {N_opt, loss, loss_error = predicted/observed - 1, N_opt_ratio =
                            predicted/observed (None when the held-out budget does not bracket
                            its minimum)} or {skipped}; or {skipped: reason}.
  predictions[]             {flops, extrapolation = flops / largest sampled C, chinchilla and
                            isoflop: {N_opt, D_opt, loss, ci {N_opt, D_opt, loss}, N_opt_span,
                            constrained (False: N_opt interval spans > 10x, printed as
                            'unconstrained' instead of a number; None: no interval)}}; the
                            parametric optimum there is closed-form under C = 6 N D (large
                            models, where the head's FLOPs are a small part).
"""
