"""Real diagnoses of the committed samples, made once per session for the widget tests."""

import pytest

import workbench


@pytest.fixture(scope="session")
def diagnosis_of(sample):
    """diagnosis_of("legacy_mask_bert") -> its Diagnosis (faithful FP16, the committed feed)."""
    made = {}

    def get(name: str):
        if name not in made:
            path, feed = sample(name)
            made[name] = workbench.diagnose(path, inputs=feed)
        return made[name]

    return get


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
