-- The marts now leave partial days (the last date of each export) out of baselines, trend windows
-- and weekly figures, and gained columns. Their incremental tables, built under the old rules,
-- are dropped; the next start's catch-up (or the next build) rebuilds them from the raw rows,
-- which stay. Dropping beats a full refresh run by hand: an upgrade needs no extra step.
DROP TABLE IF EXISTS
    marts.user_activity_deviation,
    marts.user_baseline_activity,
    marts.user_daily_activity,
    marts.user_engagement_trend,
    marts.user_weekly_engagement,
    marts.cohort_weekly_engagement
    CASCADE;
