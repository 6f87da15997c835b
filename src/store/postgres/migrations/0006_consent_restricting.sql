-- Consent rows that restrict data sharing, by registrant (consent::decision). Every search
-- asks, for each candidate record, whether a current consent row of its registrant restricts
-- this partner or purpose; few registrants have one, so this small partial index answers
-- "none" with one probe instead of reading each candidate's consent rows. The query repeats
-- these terms (store::postgres::dci, `Filter::Element`), so the planner can prove the index
-- applies.
create index consent_restricting on record_version (parent_id)
    where register = 'consent' and valid_to is null
      and (fields->'data_sharing_restrictions'->0) is not null;
