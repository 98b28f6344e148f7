"""Terminology service (术语服务): local codes → standard codes, free-text diagnoses → Condition.

Modules
    ``systems``    code-system / extension URIs (ICD-10 GB/T 14396 URL is a placeholder)
    ``translate``  :class:`Terminology` — ConceptMap index and R4 ``$translate``
    ``lexicon``    the diagnosis lexicon (``data/diagnosis-lexicon.json``) and tokeniser
    ``normalise``  :func:`normalise_diagnosis` — rule-based, never guesses
    ``condition``  :func:`to_condition` — the result as FHIR R4 Condition JSON
    ``http``       FastAPI router: ``/fhir/ConceptMap/$translate``, ``/fhir/Condition/$normalize``
    ``cli``        ``federation terminology normalize|translate``
The core (all but ``http`` and ``cli``) imports no HTTP or SQL.

Packaged data (``data/``, each validated with fhir.resources R4B at load or in tests)
    ConceptMap local-diagnosis-to-icd10   city-1 GB/T 14396 six-character codes → ICD-10
    ConceptMap local-lab-to-loinc         LIS item codes and Chinese item names → LOINC
                                          (GLU, FBG, HbA1c, WBC, RBC, HGB, PLT, ALT, AST, CREA,
                                          UREA, UA, K, Na, Cl, TC, TG, LDL-C, HDL-C, TnI, BNP,
                                          NT-proBNP, CRP, NEUT%)
    ConceptMap gb2261-sex-…               GB/T 2261.1 0/1/2/9 and 男/女 → administrative-gender
    ConceptMap gb2261-marital-…           GB/T 2261.2 10/20/21/22/23/30/40/90 → v3 MaritalStatus
    CodeSystem diagnosis-qualifier        site type, acuity, risk, normalisation status …

Lexicon coverage (whole terms; each with its usual variants and abbreviations)
    cardiovascular  高血压 (HBP, HTN, 高血压病, 原发性高血压) I10; 冠心病 (CHD, CAD,
                    冠状动脉粥样硬化性心脏病) I25.1; 心绞痛 I20.9 / 不稳定型 I20.0; 急性心梗
                    (AMI) I21.9; 心衰 (心力衰竭, CHF) I50.9; 房颤 (AF) I48.9
    cerebrovascular 脑梗死 (脑梗, 脑梗塞, 缺血性卒中, 脑血栓) I63.9; 腔梗 I63.8; 脑出血
                    (脑溢血, 出血性卒中) I61.9; 脑卒中 (中风, CVA) I64; TIA G45.9
    endocrine       2型糖尿病 (T2DM, II型/Ⅱ型, 糖尿病2型, NIDDM) E11.9; 1型 E10.9; 糖尿病 (DM)
                    E14.9; 高脂血症 E78.5; 高尿酸血症 E79.0; 痛风 M10.9; 甲亢 E05.9; 甲减 E03.9
    respiratory     慢阻肺 (COPD, 慢性阻塞性肺疾病) J44.9 / 急性加重 (AECOPD) J44.1; 肺炎
                    (社区获得性肺炎, CAP) J18.9, 支气管肺炎 J18.0, 大叶性肺炎 J18.1; 上感
                    (URTI) J06.9; 急性支气管炎 J20.9; 慢支 J42; 哮喘 J45.9; 肺结核 A16.2
    digestive etc.  慢性胃炎 K29.5; 急性胃肠炎 A09.9; 阑尾炎 K35.8; 胆囊结石 K80.2 (伴慢性
                    胆囊炎 K80.1); 腹股沟疝 K40.9; 肝硬化 K74.6; 慢乙肝 B18.1; CKD N18.9; 贫血
                    D64.9; 腰突症 M51.2; 膝骨关节炎 M17.9; 骨质疏松 M81.9; 手足口病 B08.4;
                    子宫肌瘤 D25.9; and the synthetic sites' emergency/obstetric diagnoses
    cancers         site + 癌/恶性肿瘤/Ca/morphology: 肺 C34.9 (上叶 .1, 中叶 .2, 下叶 .3,
                    主支气管 .0), 胃 C16.9, 肝 C22.9 (肝细胞癌/HCC C22.0), 食管 C15.9, 结肠
                    C18.9, 直肠 C20, 结直肠 C18-C20 (a range: colon vs rectum unstated), 乳腺
                    C50.9, 宫颈 C53.9, 子宫内膜 C54.1, 鼻咽 C11.9, 胰腺 C25.9, 甲状腺 C73,
                    膀胱 C67.9, 前列腺 C61, 肾 C64, 卵巢 C56, 胆囊 C23; 小细胞肺癌/NSCLC → lung
    fractures       site + 骨折: 股骨颈 S72.0, 股骨粗隆间 S72.1, 股骨干 S72.3, 桡骨远端
                    (Colles) S52.5, 肋骨 S22.3, 锁骨 S42.0, 肱骨近端 S42.2, 腰椎 S32.0, 胸椎
                    S22.0, 髌骨 S82.0, 胫骨平台 S82.1, 踝 S82.8, 跟骨 S92.0
    qualifiers      laterality 左/左侧/右/右侧/双/双侧/两侧; site type 中央型/周围型; morphology
                    鳞癌/鳞状细胞癌 8070/3, 腺癌 8140/3, 小细胞癌 8041/3, 大细胞癌, 腺鳞癌,
                    非小细胞癌, 浸润性导管癌; metastasis 并/伴/合并 + site + 转移/继发恶性肿瘤,
                    or 转移至 + site (纵隔/纵膈淋巴结, 纵隔, 肺门/锁骨上淋巴结, 淋巴结, 肝, 肺,
                    骨, 脑, 肾上腺, 胸膜, 腹膜); acuity 急性/慢性/急性加重; certainty 疑似/考虑/?
                    (provisional), 待排/除外/待查 (differential); stage IV期/晚期/TNM; grade
                    1–3级; risk 低/中/高/极高危; 原发性, 多发, 术后, 病史, 闭合性/开放性.
Anything else stays text: no coding, status ``unrecognised``, never a guess.
"""

from __future__ import annotations

from federation.terminology.condition import UNRECOGNISED_NOTE, to_condition
from federation.terminology.normalise import (
    BodySite,
    Morphology,
    NormalisedDiagnosis,
    normalise_diagnosis,
)
from federation.terminology.systems import ICD10_CN_SYSTEM, LOINC_SYSTEM, QUALIFIER_SYSTEM
from federation.terminology.translate import Match, Terminology, TranslateResult, to_parameters

__all__ = [
    "BodySite",
    "ICD10_CN_SYSTEM",
    "LOINC_SYSTEM",
    "Match",
    "Morphology",
    "NormalisedDiagnosis",
    "QUALIFIER_SYSTEM",
    "Terminology",
    "TranslateResult",
    "UNRECOGNISED_NOTE",
    "normalise_diagnosis",
    "to_condition",
    "to_parameters",
]
