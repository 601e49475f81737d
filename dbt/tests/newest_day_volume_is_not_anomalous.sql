{{ config(severity='warn') }}
-- Warns (never fails the build) when the newest date's row count deviates from its trailing 7-day
-- mean by more than volume_anomaly_threshold: a drop may be missing users, or came twice.
select activity_date, row_count, trailing_7d_mean, deviation
from {{ ref('daily_volume_anomaly') }}
where is_anomaly
  and activity_date = (select max(activity_date) from {{ ref('daily_volume_anomaly') }})
